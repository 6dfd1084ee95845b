from __future__ import annotations

import uuid

from api.errors import NotFound


def parse_id(value: str, what: str) -> uuid.UUID:
    """A malformed id names nothing that exists: 404, as for an unknown one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"No {what} with id {value}.", param="id") from None
