from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    # New server fields must not break old clients.
    model_config = ConfigDict(extra="allow")


class KeyLimit(_Model):
    metric: Literal["spend_usd", "requests", "tokens"]
    period: Literal["day", "month", "total"]
    max: float
    used: float | None = None
    remaining: float | None = None


class Key(_Model):
    object: Literal["key"]
    id: str
    name: str
    scope: Literal["master", "standard"]
    test: bool
    status: str
    prefix: str
    last_four: str
    secret: str | None = None
    max_spend_usd: float | None = None
    limits: list[KeyLimit] = []
    allowed_providers: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    stripe_customer_id: str | None = None
    metadata: dict[str, Any] = {}
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    spend_micros: int | None = None
    spend_usd: float | None = None
    remaining_micros: int | None = None
    remaining_usd: float | None = None


class KeyList(_Model):
    object: Literal["list"]
    data: list[Key]
    has_more: bool
    next_cursor: str | None = None
