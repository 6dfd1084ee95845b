"""Request and response models for `/v1/keys` (SPEC §5.1)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from api.auth.limits import Limit, Metric
from api.kit.money import micros_to_usd, usd_to_micros

Period = Literal["day", "month", "total"]  # what a client may set; rpm/tpm are per minute
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]
# Spend limits beyond a trillion dollars are a typo, and would overflow BIGINT micro-USD.
MAX_USD = Decimal("1000000000000")
MAX_COUNT = 10**15


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitIn(_Body):
    metric: Metric
    period: Period
    max: Decimal = Field(ge=0)

    @model_validator(mode="after")
    def _whole_counts(self) -> LimitIn:
        if self.metric == "spend_usd":
            if self.max > MAX_USD:
                raise ValueError(f"a spend limit can be at most {MAX_USD} USD")
        elif self.max != self.max.to_integral_value() or self.max > MAX_COUNT:
            raise ValueError(f"a {self.metric} limit must be a whole number up to {MAX_COUNT}")
        return self

    def to_limit(self) -> Limit:
        amount = usd_to_micros(self.max) if self.metric == "spend_usd" else int(self.max)
        return Limit(metric=self.metric, period=self.period, max=amount)


class _KeyFields(_Body):
    max_spend_usd: Decimal | None = Field(default=None, ge=0, le=MAX_USD)
    limits: list[LimitIn] | None = Field(default=None, max_length=20)
    allowed_providers: list[ProviderName] | None = Field(default=None, max_length=50)
    allowed_models: list[ModelName] | None = Field(default=None, max_length=500)
    rpm: int | None = Field(default=None, ge=1, le=10**9)
    tpm: int | None = Field(default=None, ge=1, le=10**12)
    stripe_customer_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = (
        None
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=50)
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a timezone, e.g. 2027-01-01T00:00:00Z")
        return value


class KeyCreate(_KeyFields):
    name: Name
    test: bool = False


class KeyUpdate(_KeyFields):
    name: Name | None = None

    @field_validator("name")
    @classmethod
    def _not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("name cannot be null")
        return value


class KeyRotate(_Body):
    grace_seconds: int = Field(default=0, ge=0, le=7 * 24 * 3600)


class LimitRead(BaseModel):
    metric: Metric
    period: Period
    max: float | int
    used: float | int | None = None
    remaining: float | int | None = None


class KeyRead(BaseModel):
    object: Literal["key"] = "key"
    id: str
    name: str
    scope: Literal["master", "standard"]
    test: bool
    status: Literal["active", "revoked", "expired", "suspended"]
    prefix: str
    last_four: str
    secret: str | None = None
    max_spend_usd: float | None
    limits: list[LimitRead]
    allowed_providers: list[str] | None
    allowed_models: list[str] | None
    rpm: int | None
    tpm: int | None
    stripe_customer_id: str | None
    metadata: dict[str, Any]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    spend_micros: int | None = None
    spend_usd: float | None = None
    remaining_micros: int | None = None
    remaining_usd: float | None = None


def limit_read(limit: Limit, used: int | None = None) -> LimitRead:
    def show(amount: int) -> float | int:
        return micros_to_usd(amount) if limit.metric == "spend_usd" else amount

    return LimitRead(
        metric=limit.metric,
        period=limit.period,
        max=show(limit.max),
        used=None if used is None else show(used),
        remaining=None if used is None else show(max(limit.max - used, 0)),
    )
