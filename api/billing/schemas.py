"""Request and response models for `/v1/billing` (SPEC §5.8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.billing.amounts import MAX_MARKUP_BPS, MINIMUM_CHARGE

StripeSecretKey = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^(sk|rk)_(test|live)_[A-Za-z0-9]{8,}$")
]
WebhookSecret = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^whsec_[A-Za-z0-9+/=_-]{8,}$")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StripeAccountUpdate(_Body):
    secret_key: StripeSecretKey
    webhook_secret: WebhookSecret
    currency: str = "usd"
    markup_bps: int = Field(default=0, ge=0, le=MAX_MARKUP_BPS)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in MINIMUM_CHARGE:
            raise ValueError(f"currency must be one of {', '.join(sorted(MINIMUM_CHARGE))}")
        return value


class StripeAccountRead(BaseModel):
    object: Literal["billing.stripe"] = "billing.stripe"
    configured: bool
    livemode: bool | None = None
    secret_key_last4: str | None = None
    currency: str | None = None
    markup_bps: int | None = None
    minimum_charge_cents: int | None = None
    webhook_path: str
    updated_at: datetime | None = None


class SyncRequest(_Body):
    period: str = Field(max_length=16)
    dry_run: bool = False


class LineRead(BaseModel):
    object: Literal["billing.line"] = "billing.line"
    key_id: str
    key_name: str
    spend_micros: int
    carried_in_micros: int
    amount_cents: int
    stripe_invoice_item_id: str | None


class RecordRead(BaseModel):
    object: Literal["billing.record"] = "billing.record"
    id: str
    customer_id: str
    state: str
    currency: str
    amount_cents: int
    stripe_invoice_id: str | None
    invoice_status: str | None
    carried_into_id: str | None
    attempts: int
    last_error: str | None
    finalized_at: datetime | None
    paid_at: datetime | None
    lines: list[LineRead]


class RunRead(BaseModel):
    object: Literal["billing.run"] = "billing.run"
    id: str
    period: str
    currency: str
    markup_bps: int
    status: Literal["complete", "incomplete"]
    customers: int
    invoices: int
    carried_forward: int
    failed: int
    amount_cents: int
    syncs: int
    last_synced_at: datetime | None
    created_at: datetime
    records: list[RecordRead] | None = None
