from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from tollgate.types.key import KeyLimit
from tollgate.types.shared import TollgateModel


class AlertSettings(TollgateModel):
    webhook_url: str | None = None
    emails: list[str] = Field(default_factory=list)
    """Who budget alerts are mailed to (through the server's SMTP settings)."""
    signing_secret_set: bool


class FailoverSettings(TollgateModel):
    enabled: bool


class RoutingSettings(TollgateModel):
    strategy: Literal["default", "cost", "latency", "round_robin", "weighted"]


class ShieldRule(TollgateModel):
    name: str
    pattern: str
    mask: Literal["full", "keep_prefix", "keep_suffix"] = "full"
    keep: int = 0


class ShieldSettings(TollgateModel):
    """The secret shield: masks secrets and personal data in every request body before a
    provider sees it."""

    enabled: bool
    presets: list[str]
    rules: list[ShieldRule]
    fail: Literal["closed", "open"]


class CacheSettings(TollgateModel):
    """The exact response cache: identical requests answered from a stored answer."""

    enabled: bool
    ttl_seconds: int
    max_temperature: float
    billed_fraction: float


class SemanticCacheSettings(TollgateModel):
    """The semantic cache: a question asked in other words answered from the cache."""

    enabled: bool
    threshold: float
    max_entries: int


class RetentionSettings(TollgateModel):
    """How long request traces and request-log rows are kept (days; None: the server's)."""

    trace_days: int | None = None
    log_days: int | None = None


class TenantSettings(TollgateModel):
    object: Literal["settings"]
    limits: list[KeyLimit]
    """Limits on all of the tenant's keys together."""
    alerts: AlertSettings
    failover: FailoverSettings
    routing: RoutingSettings
    shield: ShieldSettings | None = None
    cache: CacheSettings | None = None
    semantic_cache: SemanticCacheSettings | None = None
    retention: RetentionSettings | None = None


class ShieldMatch(TollgateModel):
    name: str
    start: int
    end: int


class ShieldTest(TollgateModel):
    """What the secret shield makes of a text: the masked text and where each match was."""

    object: Literal["shield_test"]
    masked: str
    matches: list[ShieldMatch]


class WebhookSecret(TollgateModel):
    """Signs budget alerts, billing notices and job completions; shown once."""

    object: Literal["webhook_secret"]
    secret: str


class AlertEmail(TollgateModel):
    """How a budget alert's email went."""

    recipients: list[str]
    """The tenant's `alerts.emails` when the alert fired."""
    delivered_at: datetime | None = None
    attempts: int
    last_error: str | None = None


class Alert(TollgateModel):
    """A budget alert that fired: POSTed to the alerts webhook (`delivered_at`, `attempts` and
    `last_error` are its delivery) and mailed to `alerts.emails` (`email`)."""

    object: Literal["alert"]
    id: str
    type: str
    scope: Literal["key", "tenant"]
    key_id: str | None = None
    metric: Literal["spend_usd", "requests", "tokens"]
    period: str
    period_tag: str
    threshold: int
    """50, 80 or 100 (percent of `max`)."""
    max: float
    used: float
    max_micros: int | None = None
    used_micros: int | None = None
    created_at: datetime
    delivered_at: datetime | None = None
    attempts: int
    last_error: str | None = None
    email: AlertEmail | None = None
    """None when the tenant had no `alerts.emails` as the alert fired."""
