from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from tollgate.types.shared import TollgateModel


class UsageTotals(TollgateModel):
    requests: int
    failed: int = 0
    input_tokens: int
    cached_input_tokens: int = 0
    output_tokens: int
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0
    cost_micros: int
    cost_usd: float
    cache_hits: int = 0
    saved_tokens: int = 0
    saved_micros: int = 0


class KeyUsage(UsageTotals):
    key_id: str
    key_name: str


class ModelUsage(UsageTotals):
    model: str


class DayUsage(UsageTotals):
    day: str
    """The UTC day, `YYYY-MM-DD`."""

    @field_validator("day", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        return value[:10] if isinstance(value, str) else value


class Usage(TollgateModel):
    object: Literal["usage"]
    start: datetime
    end: datetime
    group_by: Literal["key", "model", "day"] = "key"
    by_key: list[KeyUsage]
    by_model: list[ModelUsage] | None = None
    by_day: list[DayUsage] | None = None
    totals: UsageTotals


class KeyCacheStats(TollgateModel):
    key_id: str
    key_name: str
    requests: int
    hits: int
    saved_tokens: int
    saved_micros: int
    saved_usd: float


class CacheStats(TollgateModel):
    """What the response caches saved over a period: hits, and the tokens and cost they did
    not send upstream, in all and per key."""

    object: Literal["cache_stats"]
    start: datetime
    end: datetime
    requests: int
    hits: int
    saved_tokens: int
    saved_micros: int
    saved_usd: float
    by_key: list[KeyCacheStats]


class UsageExportRow(TollgateModel):
    """One request of the CSV export. Text a spreadsheet would run as a formula (a key name
    starting with `=`) comes with a leading `'`."""

    id: str
    key_id: str
    key_name: str
    model: str | None = None
    provider: str | None = None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_micros: int
    latency_ms: int | None = None
    status: int
    created_at: datetime
    tool_calls: int | None = None
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class Log(TollgateModel):
    """One request log entry: every proxied call, thread model call and refusal."""

    object: Literal["log"]
    id: str
    request_id: str | None = None
    key_id: str
    endpoint: str | None = None
    model: str | None = None
    provider: str | None = None
    status: int
    input_tokens: int
    cached_input_tokens: int = 0
    output_tokens: int
    reasoning_tokens: int | None = None
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0
    cost_micros: int
    cost_usd: float
    latency_ms: int | None = None
    tool_calls: int | None = None
    estimated: bool | None = None
    error_code: str | None = None
    attempts: int | None = None
    account: str | None = None
    failover_from: str | None = None
    trace: list[dict[str, Any]] | None = None
    trace_id: str | None = None  # its request trace (`client.logs.trace(trace_id)`), while kept
    created_at: datetime


class TraceStep(TollgateModel):
    """One step of a request: auth, body, access, route, limits, cache, translate, attempt,
    first_byte, settle, ledger (refused, for a refusal); an attempt carries its provider,
    model, account, status and reason, other steps what they record."""

    name: str
    start_ms: float  # from the request's arrival
    duration_ms: float | None = None  # None for the ledger hand-over


class Trace(TollgateModel):
    """Where one request's time went (`GET /v1/traces/{id}`)."""

    object: Literal["trace"]
    id: str
    request_id: str
    key_id: str
    model: str | None = None
    provider: str | None = None
    status: int | None = None
    created_at: datetime
    duration_ms: float
    steps: list[TraceStep]
    attempts: list[dict[str, Any]] = Field(default_factory=list)
