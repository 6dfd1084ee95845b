"""Prometheus metrics (SPEC §5.11), one registry per app so tests can build many apps."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tollgate_requests", "Proxied requests.",
            ["endpoint", "provider", "model", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tollgate_request_duration_seconds", "Time to the last byte of a proxied request.",
            ["endpoint", "provider"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttfb = Histogram(
            "tollgate_time_to_first_byte_seconds", "Time to the first streamed byte.",
            ["endpoint", "provider"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "tollgate_upstream_errors", "Failed upstream calls.",
            ["provider", "code"], registry=self.registry,
        )  # fmt: skip
        self.upstream_retries = Counter(
            "tollgate_upstream_retries", "Upstream attempts that failed and were tried again.",
            ["provider", "code"], registry=self.registry,
        )  # fmt: skip
        self.failovers = Counter(
            "tollgate_failovers", "Requests answered by another provider than the one asked.",
            ["from_provider", "to_provider"], registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "tollgate_tokens", "Metered tokens.",
            ["provider", "model", "kind"], registry=self.registry,
        )  # fmt: skip
        self.spend = Counter(
            "tollgate_spend_micro_usd", "Metered spend in micro-USD.",
            ["provider", "model"], registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "tollgate_in_flight_requests", "Proxied requests in progress.", registry=self.registry
        )
        # Resolving label values costs more than the increment; keep the children per series.
        self._series: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}

    def request_done(
        self,
        endpoint: str,
        provider: str,
        model: str,
        status: int,
        *,
        seconds: float | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_micro_usd: int = 0,
    ) -> None:
        key = (endpoint, provider, model, str(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(*key),
                self.latency.labels(endpoint, provider),
                self.tokens.labels(provider, model, "input"),
                self.tokens.labels(provider, model, "output"),
                self.spend.labels(provider, model),
            )
        requests, latency, tokens_in, tokens_out, spend = series
        requests.inc()
        if seconds is not None:  # refused before any upstream call: no latency to speak of
            latency.observe(seconds)
        if input_tokens or output_tokens:
            tokens_in.inc(input_tokens)
            tokens_out.inc(output_tokens)
            spend.inc(cost_micro_usd)
