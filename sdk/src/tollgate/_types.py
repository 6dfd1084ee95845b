"""Sentinels and small shared types."""

from __future__ import annotations

from typing import Any, Final

import httpx


class NotGiven:
    """Marks an argument the caller did not pass, as distinct from an explicit None."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()

Timeout = float | httpx.Timeout | None
"""Seconds for the whole request, or an `httpx.Timeout`; None waits forever."""


def given(**fields: Any) -> dict[str, Any]:
    """The fields the caller passed, `None` included (it clears a value on the server)."""
    return {name: value for name, value in fields.items() if not isinstance(value, NotGiven)}
