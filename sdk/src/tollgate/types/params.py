"""Typed dictionaries for structured arguments."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class LimitParam(TypedDict):
    """`{"metric": "spend_usd", "period": "month", "max": 20}`: spend in USD, else counts."""

    metric: Literal["spend_usd", "requests", "tokens"]
    period: Literal["day", "month", "total"]
    max: float


class AlertSettingsParam(TypedDict, total=False):
    webhook_url: str | None
    emails: list[str]


class FailoverSettingsParam(TypedDict, total=False):
    enabled: bool


class RoutingSettingsParam(TypedDict, total=False):
    strategy: Literal["default", "cost", "latency", "round_robin", "weighted"]


ShieldPreset = Literal[
    "anthropic_key", "openai_key", "google_api_key", "aws_access_key_id",
    "aws_secret_access_key", "jwt", "credit_card", "email", "phone",
]  # fmt: skip


class ShieldRuleParam(TypedDict):
    """`{"name": "ticket", "pattern": r"\\bTCK-\\d{6}\\b", "mask": "keep_suffix", "keep": 3}`:
    what `pattern` matches is masked as `[REDACTED:<name>]`, or keeps its first / last `keep`
    characters (at most half of it)."""

    name: str
    pattern: str
    mask: NotRequired[Literal["full", "keep_prefix", "keep_suffix"]]
    keep: NotRequired[int]


class CacheSettingsParam(TypedDict, total=False):
    enabled: bool
    ttl_seconds: int
    max_temperature: float
    billed_fraction: float


class SemanticCacheSettingsParam(TypedDict, total=False):
    enabled: bool
    threshold: float
    max_entries: int


class RetentionSettingsParam(TypedDict, total=False):
    trace_days: int | None
    log_days: int | None


class ShieldSettingsParam(TypedDict, total=False):
    enabled: bool
    presets: list[ShieldPreset]
    rules: list[ShieldRuleParam]
    fail: Literal["closed", "open"]
