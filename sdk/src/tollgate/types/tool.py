from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from tollgate.types.shared import TollgateModel


class Tool(TollgateModel):
    object: Literal["tool"]
    id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    webhook_url: str
    timeout_ms: int
    signing_secret: str | None = None
    """Only in the answer of `create` and `rotate_secret`: give it to your webhook, which
    checks each call with `tollgate.webhooks.verify`."""
    created_at: datetime
    updated_at: datetime
