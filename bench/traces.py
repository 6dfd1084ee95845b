"""CPU per request of a request trace: what tracing adds to one proxied request in the API
process, measured against the same work with tracing off, in the same run.

    python bench/traces.py [--requests 200000] [--otel]

"On" does what a traced request does: the lane reads and checks `x-trace-id`, the steps are
timed (auth, body, access, route, limits, translate, first byte, settle, ledger: nine
`perf_counter_ns` calls and tuple appends), the steps and one upstream attempt are serialised to
JSON at settle, and the usage event carries them onto the ledger (`encode`, what the Redis
stream receives). "Off" does the same request bookkeeping without any of it: the event encoded
without a trace. The difference is the trace's cost; process CPU time, best of five rounds.
`--otel` also measures the OpenTelemetry export (the SDK's spans, one per step and attempt,
through its batch processor to an in-memory exporter), which runs only when an OTLP endpoint
is configured.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.gateway import traces
from api.gateway.resilience import Attempt
from api.usage.ledger import UsageRecord, encode

STEPS = ("auth", "body", "access", "route", "limits", "translate")
TENANT, KEY = uuid.uuid4(), uuid.uuid4()


def _event() -> UsageRecord:
    return UsageRecord(
        request_id="req_0123456789abcdef0123456789abcdef", tenant_id=TENANT, key_id=KEY,
        endpoint="/v1/chat/completions", model="gpt-4o", provider="openai", status=200,
        input_tokens=12, output_tokens=40, cost_micros=430, latency_ms=3, attempts=1,
        account="default",
    )  # fmt: skip


def off(requests: int) -> int:
    started = time.process_time_ns()
    for _ in range(requests):
        event = _event()
        encode(event)
    return time.process_time_ns() - started


def on(requests: int, spans: Any = None) -> int:
    header = b"checkout-0123456789"
    started = time.process_time_ns()
    for _ in range(requests):
        timing = traces.Timing(traces.sane_trace_id(header) or "req_0", None)
        for name in STEPS:
            timing.step(name)
        began = time.perf_counter()
        attempt = Attempt("openai", "gpt-4o", "default", 200, None, 2, began)
        timing.mark("first_byte")
        settle_from = time.perf_counter_ns()
        timing.step("settle", settle_from)
        timing.mark("ledger")
        event = _event()
        event.trace_id = timing.trace_id
        event.steps = traces.serialise(timing, [attempt])
        event.trace_attempts = traces.attempts_json([attempt])
        encode(event)
        if spans is not None:
            call = SimpleNamespace(
                timing=timing, model="gpt-4o", request_id=event.request_id,
                endpoint=event.endpoint, route=SimpleNamespace(entry=SimpleNamespace(kind="chat")),
                trace=SimpleNamespace(failover_from=None, attempts=[attempt]),
            )  # fmt: skip
            spans._spans(call, event, settle_from, time.perf_counter_ns())
    if spans is not None:
        spans.flush()
    return time.process_time_ns() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--otel", action="store_true", help="measure the OTLP export too")
    args = parser.parse_args()
    n = args.requests
    off(n // 10)  # warm up
    on(n // 10)
    best_off = min(off(n) for _ in range(5)) / n
    best_on = min(on(n) for _ in range(5)) / n
    print(f"requests per round: {n}")
    print(f"tracing off: {best_off / 1000:.2f} µs CPU per request (the event encoded)")
    print(f"tracing on:  {best_on / 1000:.2f} µs CPU per request")
    print(f"added by the trace: {(best_on - best_off) / 1000:.2f} µs CPU per request")
    if args.otel:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from api.gateway.otel import OtelSpans

        exporter = InMemorySpanExporter()
        spans = OtelSpans(exporter)
        rounds = []
        for _ in range(5):
            rounds.append(on(n // 10, spans) / (n // 10))
            exporter.clear()
        spans.close()
        best_otel = min(rounds)
        print(f"with OpenTelemetry spans: {best_otel / 1000:.2f} µs CPU per request")
        print(f"added by trace + spans: {(best_otel - best_off) / 1000:.2f} µs CPU per request")


if __name__ == "__main__":
    main()
