"""Typed dictionaries for structured arguments."""

from __future__ import annotations

from typing import Literal, TypedDict


class LimitParam(TypedDict):
    """`{"metric": "spend_usd", "period": "month", "max": 20}`: spend in USD, else counts."""

    metric: Literal["spend_usd", "requests", "tokens"]
    period: Literal["day", "month", "total"]
    max: float


class AlertSettingsParam(TypedDict, total=False):
    webhook_url: str | None


class FailoverSettingsParam(TypedDict, total=False):
    enabled: bool


class RoutingSettingsParam(TypedDict, total=False):
    strategy: Literal["default", "cost", "latency", "round_robin", "weighted"]
