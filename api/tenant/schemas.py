from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from api.auth.schemas import LimitIn, LimitRead
from api.kit.email_address import check_address
from api.shield.schemas import ShieldSettings


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TenantRead(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: str
    name: str
    created_at: datetime
    master_key: str | None = None


MAX_ALERT_EMAILS = 20


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where budget alerts are POSTed, signed with the secret from POST /v1/settings/webhook-secret.
    webhook_url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    # Who budget alerts are mailed to (through the operator's TOLLGATE_SMTP_* server).
    emails: list[Annotated[str, AfterValidator(check_address)]] = Field(
        default_factory=list, max_length=MAX_ALERT_EMAILS
    )


class FailoverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Cross-provider failover: an equivalent model (same tier) on another provider answers
    # when every account of the requested one failed. Off by default.
    enabled: bool = False


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How upstream accounts (and failover models) are ordered: "default" (weighted by weight
    # and health), "weighted" (the same), "cost" (cheapest equivalent first), "latency" (best
    # recent p50 first), "round_robin".
    strategy: Literal["default", "cost", "latency", "round_robin", "weighted"] = "default"


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The exact response cache: identical requests of this tenant (same model, messages, tools
    # and generation parameters) answered from a stored answer for `ttl_seconds`, requests
    # sampled above `max_temperature` never; a hit bills `billed_fraction` of the cost it saved
    # (0: free). Off by default.
    enabled: bool = False
    ttl_seconds: int = Field(default=3600, ge=1, le=30 * 86_400)
    max_temperature: float = Field(default=1.0, ge=0, le=2)
    billed_fraction: float = Field(default=0.0, ge=0, le=1)


class SemanticCacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The semantic cache, on top of the response cache (`cache` must be on too): a single-turn
    # question answered with the stored answer of one asked in other words, at a cosine
    # similarity of at least `threshold`; at most `max_entries` questions kept. Off by default.
    enabled: bool = False
    threshold: float = Field(default=0.92, ge=0.5, le=1)
    max_entries: int = Field(default=10_000, ge=1, le=100_000)


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long this tenant's request traces and request-log rows are kept (days); unset: the
    # operator's TOLLGATE_TRACE_RETENTION_DAYS / TOLLGATE_LOG_RETENTION_DAYS. Usage reports and
    # caps read the rollups, which are kept whatever these say.
    trace_days: int | None = Field(default=None, ge=1, le=3650)
    log_days: int | None = Field(default=None, ge=1, le=36500)


class SettingsUpdate(BaseModel):
    """`PUT /v1/settings` is a partial update: only the groups given change."""

    model_config = ConfigDict(extra="forbid")

    limits: list[LimitIn] | None = Field(default=None, max_length=20)
    alerts: AlertSettings | None = None
    failover: FailoverSettings | None = None
    routing: RoutingSettings | None = None
    shield: ShieldSettings | None = None
    cache: CacheSettings | None = None
    semantic_cache: SemanticCacheSettings | None = None
    retention: RetentionSettings | None = None


class AlertSettingsRead(BaseModel):
    webhook_url: str | None
    emails: list[str]
    signing_secret_set: bool


class SettingsRead(BaseModel):
    object: Literal["settings"] = "settings"
    limits: list[LimitRead]
    alerts: AlertSettingsRead
    failover: FailoverSettings
    routing: RoutingSettings
    shield: ShieldSettings
    cache: CacheSettings
    semantic_cache: SemanticCacheSettings
    retention: RetentionSettings


class WebhookSecretRead(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str
