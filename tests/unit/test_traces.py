"""Request traces without servers: trace ids, the steps' JSON, the OpenTelemetry spans (the
SDK's in-memory exporter), and that nothing of the SDK is imported when export is off."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.gateway import otel, traces
from api.gateway.resilience import Attempt
from api.usage.ledger import UsageRecord

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"abc-123", "abc-123"),
        (b"x" * 128, "x" * 128),
        (b"spaces inside ok", "spaces inside ok"),
        (b"x" * 129, None),
        (b"tab\there", None),
        (b"new\nline", None),
        ("ünï".encode(), None),
        (b"", None),
        (None, None),
    ],
)
def test_a_trace_id_is_printable_and_at_most_128(raw: bytes | None, expected: str | None):
    assert traces.sane_trace_id(raw) == expected


def test_steps_serialise_in_order_with_attempts_in_their_place():
    timing = traces.Timing("t-1", origin=1_000_000_000)
    timing.last = 1_000_000_000
    timing.steps = [
        ("auth", 1_000_000_000, 1_001_000_000, None),
        ("limits", 1_001_000_000, 1_002_000_000, None),
        ("first_byte", 1_010_000_000, 1_010_000_000, None),
        ("settle", 1_020_000_000, 1_020_500_000, {"x": 1}),
        ("ledger", 1_020_500_000, 1_020_500_000, None),
    ]
    attempt = Attempt("openai", "gpt-4o", "a", 200, None, 7, began=1.003)
    steps = orjson.loads(traces.serialise(timing, [attempt]))
    assert [s["name"] for s in steps] == [
        "auth", "limits", "attempt", "first_byte", "settle", "ledger"
    ]  # fmt: skip
    assert steps[0] == {"name": "auth", "start_ms": 0.0, "duration_ms": 1.0}
    assert steps[2]["start_ms"] == 3.0
    assert (steps[2]["duration_ms"], steps[2]["account"], steps[2]["status"]) == (7, "a", 200)
    assert steps[4]["x"] == 1
    assert steps[5]["duration_ms"] is None  # known only once the event is durable
    assert traces.attempts_json(None) is None


def _call(timing: traces.Timing) -> Any:
    attempt = Attempt("openai", "gpt-4o", "pool-a", 503, "upstream_unavailable", 2, began=0.0)
    attempt.began = (timing.origin + 1_000_000) / 1e9
    return SimpleNamespace(
        timing=timing, model="gpt-4o", request_id="req_1", endpoint="/v1/chat/completions",
        route=SimpleNamespace(entry=SimpleNamespace(kind="chat")),
        trace=SimpleNamespace(failover_from=None, attempts=[attempt]),
    )  # fmt: skip


async def test_spans_carry_the_genai_attributes():
    exporter = InMemorySpanExporter()
    spans = otel.OtelSpans(exporter, delay_ms=10)
    timing = traces.Timing("req_1")
    timing.step("auth")
    timing.step("limits")
    ledger = timing.step("settle")
    timing.mark("ledger")
    tenant, key = uuid.uuid4(), uuid.uuid4()
    event = UsageRecord(
        request_id="req_1", tenant_id=tenant, key_id=key, endpoint="/v1/chat/completions",
        model="gpt-4o", provider="openai", status=200, input_tokens=12, output_tokens=5,
        cost_micros=81,
    )  # fmt: skip
    spans.export(_call(timing), event, ledger)
    await asyncio.sleep(0)  # built on the loop's next turn
    assert spans.flush()
    finished = exporter.get_finished_spans()
    (root,) = [span for span in finished if span.name == "chat gpt-4o"]
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 5, "tollgate.cost_micros": 81,
        "tollgate.key_id": str(key), "tollgate.tenant_id": str(tenant),
    }  # fmt: skip
    attributes = dict(root.attributes or {})
    assert {name: attributes[name] for name in expected} == expected
    children = [span for span in finished if span.parent is not None]
    assert {span.name for span in children} == {"auth", "limits", "settle", "ledger", "attempt"}
    assert all(span.parent.span_id == root.context.span_id for span in children)  # type: ignore[union-attr]
    ledger_span = next(span for span in children if span.name == "ledger")
    assert ledger_span.end_time >= ledger_span.start_time  # type: ignore[operator]
    spans.close()


def test_off_by_default_and_nothing_of_the_sdk_is_imported(tmp_path: Path):
    code = (
        "import sys\n"
        "from api.app import create_app\n"
        "from api.gateway import otel, pipeline, runtime\n"
        "from api.settings import Settings\n"
        "settings = Settings(secret_key='x' * 32, data_dir=sys.argv[1])\n"
        "create_app(settings)\n"
        "assert otel.start(settings) is None\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
        " 'opentelemetry.exporter'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if "OTEL" not in k}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "data")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_endpoint_is_a_base_url_or_the_traces_url():
    assert otel.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otel.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert otel.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
