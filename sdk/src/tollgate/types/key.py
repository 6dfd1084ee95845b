from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from tollgate.types.shared import TollgateModel


class KeyLimit(TollgateModel):
    """A limit; `used` and `remaining` are this period's (on `retrieve`). Spend is in USD."""

    metric: Literal["spend_usd", "requests", "tokens"]
    period: Literal["day", "month", "total"]
    max: float
    used: float | None = None
    remaining: float | None = None


class Key(TollgateModel):
    object: Literal["key"]
    id: str
    name: str
    scope: Literal["master", "standard"]
    test: bool
    status: Literal["active", "revoked", "expired", "suspended"]
    prefix: str
    last_four: str
    secret: str | None = None
    """Only in the answer of `create` and `rotate`: store it, it is never shown again."""
    max_spend_usd: float | None = None
    limits: list[KeyLimit] = Field(default_factory=list)
    allowed_providers: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    stripe_customer_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    spend_micros: int | None = None
    """This month's spend in micro-USD (on `retrieve` and `retrieve_self`)."""
    spend_usd: float | None = None
    remaining_micros: int | None = None
    remaining_usd: float | None = None
