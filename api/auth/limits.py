"""Key limits as data, and the pure rules that combine and window them (SPEC §5.1).

A limit is stored as `{"metric", "period", "max"}` with `max` in base units: micro-USD for
`spend_usd`, a count for `requests`, `tokens` and the per-unit metrics (`audio_seconds`,
`characters`, `images`). `max_spend_usd` is shorthand for the monthly
spend limit; periods are calendar UTC.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from api.errors import InvalidRequest
from api.kit.time import month_start

# The per-unit metrics count what SPEC §5.12's endpoints bill by: seconds of audio transcribed,
# characters spoken, images made.
Metric = Literal["spend_usd", "requests", "tokens", "audio_seconds", "characters", "images"]
UNIT_METRICS = ("audio_seconds", "characters", "images")
Period = Literal["minute", "day", "month", "total"]  # "minute": the rpm/tpm rate windows


@dataclass(frozen=True, slots=True)
class Limit:
    metric: Metric
    period: Period
    max: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limit:
        return cls(metric=data["metric"], period=data["period"], max=int(data["max"]))


def combine(limits: list[Limit], monthly_spend_micros: int | None) -> list[Limit]:
    """Merge the `max_spend_usd` shorthand into `limits`; one limit per (metric, period)."""
    seen: set[tuple[str, str]] = set()
    for position, limit in enumerate(limits):
        pair = (limit.metric, limit.period)
        if pair in seen:
            raise InvalidRequest(
                f"limits has two entries for metric {limit.metric!r} and period {limit.period!r}.",
                param=f"limits[{position}]",
            )
        seen.add(pair)
    if monthly_spend_micros is None:
        return list(limits)
    if ("spend_usd", "month") in seen:
        raise InvalidRequest(
            "max_spend_usd is shorthand for a monthly spend_usd limit; give one or the other.",
            param="max_spend_usd",
        )
    return [*limits, Limit("spend_usd", "month", monthly_spend_micros)]


def monthly_spend(limits: list[Limit]) -> int | None:
    return next(
        (lim.max for lim in limits if lim.metric == "spend_usd" and lim.period == "month"),
        None,
    )


def period_start(period: Period, now: datetime) -> datetime | None:
    """The first instant of the current calendar-UTC period; None for `total`."""
    if period == "minute":
        return now.astimezone(UTC).replace(second=0, microsecond=0)
    if period == "month":
        return month_start(now)
    if period == "day":
        return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return None
