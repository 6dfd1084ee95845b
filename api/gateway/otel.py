"""Request traces as OpenTelemetry spans, over OTLP/HTTP (protobuf), for operators who run a
tracing backend: on when `TOLLGATE_OTEL_EXPORTER_OTLP_ENDPOINT` (or the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`) is set, off otherwise, and then the SDK is never imported (the
API's memory budget is tight).

Each request is one root span (`"{operation} {model}"`, GenAI semantic conventions:
`gen_ai.operation.name`, `gen_ai.provider.name` and `gen_ai.system`, `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, plus
`tollgate.cost_micros`, `tollgate.key_id`, `tollgate.tenant_id`, `tollgate.trace_id`) with a
child span per step and per upstream attempt, from the same timings the stored trace has.
Spans are built after the usage event is durable, on the next turn of the event loop, and
leave through a `BatchSpanProcessor` (its own thread): never on the request's path.
A client trace id of 32 hex digits (W3C) becomes the spans' trace id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from api.gateway.pipeline import Call
    from api.settings import Settings
    from api.usage.ledger import UsageRecord

logger = logging.getLogger("tollgate.gateway")

# GenAI semantic conventions' provider names.
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
                  "deepseek": "deepseek", "mock": "mock"}  # fmt: skip
_W3C_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def endpoint(settings: Settings) -> str | None:
    """Where spans go: Tollgate's setting, else the standard variable; None: off."""
    return settings.otel_exporter_otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def traces_url(base: str) -> str:
    """OTLP/HTTP's traces path under an endpoint given as a base URL (as the standard
    variable is), unless it names it already."""
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def make_exporter(url: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url)


def start(settings: Settings) -> OtelSpans | None:
    """The span exporter when an endpoint is configured, else None (nothing imported)."""
    url = endpoint(settings)
    if not url:
        return None
    return OtelSpans(make_exporter(traces_url(url)))


def operation(call: Call) -> str:
    path = call.endpoint
    if "embed" in path:
        return "embeddings"
    if "generateContent" in path or "GenerateContent" in path:
        return "generate_content"
    kind = call.route.entry.kind
    return "chat" if kind == "chat" else kind


class OtelSpans:
    """Builds and exports spans (see the module docstring)."""

    def __init__(self, exporter: Any, *, delay_ms: int = 1000) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._trace = trace
        self._provider = TracerProvider(resource=Resource.create({"service.name": "tollgate"}))
        self._processor = BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms)
        self._provider.add_span_processor(self._processor)
        self._tracer = self._provider.get_tracer("tollgate")
        # perf_counter_ns (the steps' clock) to the wall clock spans are stamped with.
        self._offset = time.time_ns() - time.perf_counter_ns()

    def export(self, call: Call, event: UsageRecord, ledger_ns: int) -> None:
        """Called once the call's event is durable: its spans are built on the loop's next
        turn, after the response went on."""
        durable = time.perf_counter_ns()
        asyncio.get_running_loop().call_soon(self._emit, call, event, ledger_ns, durable)

    def _emit(self, call: Call, event: UsageRecord, ledger_ns: int, durable: int) -> None:
        try:
            self._spans(call, event, ledger_ns, durable)
        except Exception:  # tracing never fails a request
            logger.exception("could not export the trace of request %s", call.request_id)

    def _spans(self, call: Call, event: UsageRecord, ledger_ns: int, durable: int) -> None:
        timing = call.timing
        if timing is None:
            return
        trace, offset, tracer = self._trace, self._offset, self._tracer
        requested = call.model
        failed_over = call.trace.failover_from if call.trace is not None else None
        if failed_over:
            requested = failed_over.partition("/")[2] or requested
        provider = PROVIDER_NAMES.get(event.provider, event.provider)
        attributes: dict[str, str | int] = {
            "gen_ai.operation.name": operation(call),
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": requested,
            "gen_ai.response.model": call.model,
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "tollgate.cost_micros": event.cost_micros,
            "tollgate.key_id": str(event.key_id),
            "tollgate.tenant_id": str(event.tenant_id),
            "tollgate.trace_id": timing.trace_id,
            "tollgate.request_id": call.request_id,
            "tollgate.endpoint": call.endpoint,
            "http.response.status_code": event.status,
        }
        if event.error_code:
            attributes["error.type"] = event.error_code
        parent = None
        if _W3C_TRACE_ID.fullmatch(timing.trace_id) and int(timing.trace_id, 16):
            remote = trace.SpanContext(
                trace_id=int(timing.trace_id, 16), span_id=int.from_bytes(os.urandom(8)) or 1,
                is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )  # fmt: skip
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        root = tracer.start_span(
            f"{attributes['gen_ai.operation.name']} {requested}", context=parent,
            kind=trace.SpanKind.SERVER, attributes=attributes, start_time=timing.origin + offset,
        )  # fmt: skip
        inside = trace.set_span_in_context(root)
        for name, started, ended, attrs in timing.steps:
            if name == "ledger":
                started, ended = ledger_ns, durable
            step = tracer.start_span(
                name, context=inside, start_time=started + offset,
                attributes={k: v for k, v in (attrs or {}).items() if v is not None},
            )  # fmt: skip
            step.end(end_time=ended + offset)
        for attempt in call.trace.attempts if call.trace is not None else ():
            began = int(attempt.began * 1_000_000_000)
            details: dict[str, str | int] = {
                "gen_ai.provider.name": PROVIDER_NAMES.get(attempt.provider, attempt.provider),
                "gen_ai.request.model": attempt.model,
                "tollgate.account": attempt.account,
                "http.response.status_code": attempt.status,
            }
            if attempt.reason:
                details["error.type"] = attempt.reason
            span = tracer.start_span(
                "attempt", context=inside, kind=trace.SpanKind.CLIENT, attributes=details,
                start_time=began + offset,
            )  # fmt: skip
            if attempt.status >= 400:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end(end_time=began + attempt.ms * 1_000_000 + offset)
        if event.status >= 400:
            root.set_status(trace.Status(trace.StatusCode.ERROR, event.error_code))
        root.end(end_time=durable + offset)

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self._processor.force_flush(timeout_ms))

    def close(self) -> None:
        self._provider.shutdown()
