"""Prometheus metrics (SPEC §5.11), one registry per app so tests can build many apps."""

from __future__ import annotations

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
