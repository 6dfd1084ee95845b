"""Request traces through a real server: each request's steps and upstream attempts,
`X-Trace-Id` on every answer, `GET /v1/traces/{id}` scoped to its tenant and key, the request
log's link to it, and the retention sweep (traces and, when set, request-log rows; never the
rollups)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_sessionmaker
from api.kit.time import utcnow
from api.settings import Settings
from api.trace import repository as trace_repository
from api.trace import tasks as trace_tasks
from api.trace.models import RequestTrace
from api.usage.models import UsageEvent, UsageKeyRollup, UsageRollup, UsageTenantRollup
from api.usage.rollups import insert_events
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_seen, logs_when_settled
from tests.fakes import gemini_upstream
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.upstream import FakeUpstream
from tests.integration.test_resilience import FAST, KEYS, chat, pool_settings, serve, user


async def trace_when_settled(
    http: httpx.AsyncClient, headers: dict[str, str], trace_id: str
) -> dict[str, Any]:
    """`GET /v1/traces/{id}` once the request's event (and its trace) is written."""
    response = None
    for _ in range(100):
        response = await http.get(f"/v1/traces/{trace_id}", headers=headers)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"no trace {trace_id}: {response and response.text}")


def names(trace: dict[str, Any]) -> list[str]:
    return [step["name"] for step in trace["steps"]]


class TestTraceOfARequest:
    async def test_a_request_records_its_steps_in_order(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        headers = {**bearer(key["secret"]), "x-trace-id": "checkout-42"}
        response = await chat(http, headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-trace-id"] == "checkout-42"
        trace = await trace_when_settled(http, tenant.headers, "checkout-42")
        assert trace["object"] == "trace"
        assert trace["id"] == "checkout-42"
        assert trace["request_id"] == response.headers["x-request-id"]
        assert trace["key_id"] == key["id"]
        assert (trace["model"], trace["provider"], trace["status"]) == ("gpt-4o", "openai", 200)
        steps = names(trace)
        for name in ("auth", "body", "access", "route", "limits", "attempt", "settle", "ledger"):
            assert name in steps, steps
        assert steps.index("auth") < steps.index("limits") < steps.index("attempt")
        assert steps.index("attempt") < steps.index("settle") < steps.index("ledger")
        starts = [step["start_ms"] for step in trace["steps"]]
        assert starts == sorted(starts)
        assert all(s["duration_ms"] >= 0 for s in trace["steps"] if s["name"] != "ledger")
        assert trace["duration_ms"] >= trace["steps"][-1]["start_ms"]
        (attempt,) = trace["attempts"]
        assert (attempt["provider"], attempt["status"], attempt["reason"]) == ("openai", 200, None)
        (log,) = await logs_when_settled(http, tenant, 1)
        assert log["trace_id"] == "checkout-42"

    async def test_any_printable_id_can_be_read_back(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        given = "span/of 42:x?y#z"
        response = await chat(http, {**bearer(key["secret"]), "x-trace-id": given})
        assert response.headers["x-trace-id"] == given
        trace = await trace_when_settled(http, tenant.headers, quote(given, safe=""))
        assert trace["id"] == given

    async def test_without_a_trace_id_the_request_id_is_the_trace_id(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await chat(http, bearer(key["secret"]))
        request_id = response.headers["x-request-id"]
        assert response.headers["x-trace-id"] == request_id
        trace = await trace_when_settled(http, tenant.headers, request_id)
        assert trace["request_id"] == request_id

    async def test_a_stream_has_its_first_byte(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        headers = {**bearer(key["secret"]), "x-trace-id": "streamed"}
        response = await chat(http, headers, stream=True)
        assert response.status_code == 200
        assert response.headers["x-trace-id"] == "streamed"
        steps = names(await trace_when_settled(http, tenant.headers, "streamed"))
        assert steps.index("attempt") < steps.index("first_byte") < steps.index("settle")

    @pytest.mark.parametrize(
        "given",
        ["x" * 129, "tab\there", "ünïcode"],
        ids=["too-long", "control-character", "not-ascii"],
    )
    async def test_a_bad_trace_id_is_replaced_by_the_request_id(
        self, http: httpx.AsyncClient, given: str
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        headers: Any = {**bearer(key["secret"]), "x-trace-id": given.encode()}
        response = await chat(http, headers)
        assert response.status_code == 200
        assert response.headers["x-trace-id"] == response.headers["x-request-id"]


class TestSdk:
    async def test_the_sdk_reads_a_trace_and_the_logs_link(
        self, http: httpx.AsyncClient, gateway_url: str
    ):
        import tollgate

        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        await chat(http, {**bearer(key["secret"]), "x-trace-id": "sdk/1"})
        await trace_when_settled(http, tenant.headers, "sdk%2F1")
        async with tollgate.AsyncTollgate(
            api_key=tenant.master_key, base_url=gateway_url, max_retries=0
        ) as client:
            trace = await client.logs.trace("sdk/1")
            assert (trace.id, trace.status, trace.model) == ("sdk/1", 200, "gpt-4o")
            assert [a["status"] for a in trace.attempts] == [200]
            assert trace.steps[0].name == "auth"
            entries = [entry async for entry in client.logs.list(limit=5)]
            assert entries[0].trace_id == "sdk/1"
            with pytest.raises(tollgate.NotFoundError):
                await client.logs.trace("no-such-trace")


class TestUnitEndpoints:
    async def test_an_embeddings_request_is_traced(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await http.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"},
            headers={**bearer(key["secret"]), "x-trace-id": "vectors"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["x-trace-id"] == "vectors"
        trace = await trace_when_settled(http, tenant.headers, "vectors")
        steps = names(trace)
        assert steps[:5] == ["auth", "body", "access", "route", "limits"]
        assert "attempt" in steps
        assert trace["model"] == "text-embedding-3-small"


class TestTraceIdOnEveryAnswer:
    async def test_errors_carry_it(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        headers = {"x-trace-id": "refused-1"}
        unauthenticated = await chat(http, headers)
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["x-trace-id"] == "refused-1"
        headers.update(bearer(key["secret"]))
        unknown = await chat(http, headers, model="no-such-model")
        assert unknown.status_code == 400
        assert unknown.headers["x-trace-id"] == "refused-1"
        # A refusal is a request of its key's: logged, and traced up to where it stopped.
        trace = await trace_when_settled(http, tenant.headers, "refused-1")
        assert names(trace)[-1] == "refused"
        assert trace["steps"][-1]["code"] == "invalid_model"
        assert trace["status"] == 400
        management = await http.get("/v1/keys", headers={**tenant.headers, "x-trace-id": "m-1"})
        assert management.headers["x-trace-id"] == "m-1"

    async def test_a_gemini_route_carries_it(self, every_http: httpx.AsyncClient):
        tenant = await create_tenant(every_http)
        key = await create_key(every_http, tenant)
        response = await every_http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
            headers={"x-goog-api-key": key["secret"], "x-trace-id": "g-1"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-trace-id"] == "g-1"
        steps = names(await trace_when_settled(every_http, tenant.headers, "g-1"))
        assert {"auth", "limits", "attempt", "settle"} <= set(steps)


class TestScope:
    async def test_one_tenants_trace_is_a_404_to_another(self, http: httpx.AsyncClient):
        mine, theirs = await create_tenant(http), await create_tenant(http, name="Other")
        my_key, their_key = await create_key(http, mine), await create_key(http, theirs)
        await chat(http, {**bearer(my_key["secret"]), "x-trace-id": "only-mine"})
        await trace_when_settled(http, mine.headers, "only-mine")
        for headers in (theirs.headers, bearer(their_key["secret"])):
            response = await http.get("/v1/traces/only-mine", headers=headers)
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"
        # The same id in two tenants: each sees its own.
        await chat(http, {**bearer(their_key["secret"]), "x-trace-id": "only-mine"})
        theirs_seen = await trace_when_settled(http, theirs.headers, "only-mine")
        mine_seen = await trace_when_settled(http, mine.headers, "only-mine")
        assert theirs_seen["key_id"] == their_key["id"]
        assert mine_seen["key_id"] == my_key["id"]

    async def test_a_standard_key_sees_only_its_own(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        first, second = await create_key(http, tenant), await create_key(http, tenant)
        await chat(http, {**bearer(first["secret"]), "x-trace-id": "first-key"})
        await trace_when_settled(http, bearer(first["secret"]), "first-key")
        other = await http.get("/v1/traces/first-key", headers=bearer(second["secret"]))
        assert other.status_code == 404
        master = await http.get("/v1/traces/first-key", headers=tenant.headers)
        assert master.status_code == 200
        (log,) = await logs_when_seen(http, bearer(first["secret"]), 1)
        assert log["trace_id"] == "first-key"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
class TestAttempts:
    async def test_a_request_that_failed_over_shows_both_attempts(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
            tenant, headers = await user(http)
            upstream.failures = ["500"]
            response = await chat(http, {**headers, "x-trace-id": "moved"})
            assert response.status_code == 200
            trace = await trace_when_settled(http, tenant.headers, "moved")
            failed, answered = trace["attempts"]
            assert (failed["status"], failed["reason"]) == (502, "upstream_error")
            assert (answered["status"], answered["reason"]) == (200, None)
            assert failed["account"] != answered["account"]
            attempts = [s for s in trace["steps"] if s["name"] == "attempt"]
            assert [a["status"] for a in attempts] == [502, 200]
            assert attempts[0]["start_ms"] <= attempts[1]["start_ms"]

    async def test_a_retried_request_shows_its_attempts(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, KEYS[0])) as http:
            tenant, headers = await user(http)
            upstream.failures = ["500", "503"]
            response = await chat(http, {**headers, "x-trace-id": "retried"}, stream=True)
            assert response.status_code == 200
            trace = await trace_when_settled(http, tenant.headers, "retried")
            assert [a["status"] for a in trace["attempts"]] == [502, 503, 200]
            assert "first_byte" in names(trace)

    async def test_a_cross_provider_failover_shows_each_provider(
        self, settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        both = settings.model_copy(
            update={
                "openai_api_key": SecretStr("sk-operator-openai"),
                "openai_base_url": upstream.openai_base_url,
                "gemini_api_key": SecretStr(gemini_upstream.API_KEY),
                "gemini_base_url": gemini.base_url,
                **FAST,
            }
        )
        async with serve(both) as http:
            tenant, headers = await user(http, failover={"enabled": True})
            upstream.mode = "503"
            response = await chat(http, {**headers, "x-trace-id": "crossed"})
            assert response.status_code == 200, response.text
            trace = await trace_when_settled(http, tenant.headers, "crossed")
            providers = [a["provider"] for a in trace["attempts"]]
            assert (providers[0], providers[-1]) == ("openai", "gemini")
            assert trace["attempts"][0]["status"] == 503
            assert (trace["provider"], trace["model"]) == ("gemini", "gemini-2.5-pro")


class TestRetention:
    async def test_old_traces_and_log_rows_go_in_batches_and_rollups_stay(
        self, http: httpx.AsyncClient, engine: AsyncEngine, settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
    ):  # fmt: skip
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        tenant_id, key_id = uuid.UUID(tenant.id), uuid.UUID(key["id"])
        now = utcnow()

        def event(days_ago: int) -> dict[str, Any]:
            request_id = f"req_{uuid.uuid4().hex}"
            return {
                "id": uuid.uuid4(), "request_id": request_id, "tenant_id": tenant_id,
                "key_id": key_id, "endpoint": "/v1/chat/completions", "model": "gpt-4o",
                "provider": "openai", "status": 200, "input_tokens": 10, "output_tokens": 5,
                "cost_micros": 70, "created_at": now - timedelta(days=days_ago),
                "trace_id": request_id, "steps": '[{"name":"auth","start_ms":0,"duration_ms":1}]',
            }  # fmt: skip

        old = [event(40) for _ in range(5)]
        recent = [event(1) for _ in range(2)]
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            assert await insert_events(session, old + recent) == 7
            assert await insert_events(session, old) == 0  # replayed: no second trace either

        async def counted() -> tuple[int, int, list[Any]]:
            async with sessionmaker() as session:
                traces = await session.scalar(select(func.count()).select_from(RequestTrace))
                logs = await session.scalar(select(func.count()).select_from(UsageEvent))
                sums = []
                for table in (UsageRollup, UsageKeyRollup, UsageTenantRollup):
                    sums.append(
                        (await session.execute(
                            select(table.span, func.sum(table.requests),
                                   func.sum(table.cost_micros)).group_by(table.span)
                            .order_by(table.span)
                        )).all()
                    )  # fmt: skip
                return traces or 0, logs or 0, sums

        traces_before, logs_before, rollups_before = await counted()
        assert (traces_before, logs_before) == (7, 7)

        monkeypatch.setattr(trace_repository, "BATCH", 2)
        statements: list[int] = []
        real = trace_repository.expire_unscoped

        async def spy(*args: Any, **kwargs: Any) -> int:
            statements.append(n := await real(*args, **kwargs))
            return n

        monkeypatch.setattr(trace_tasks, "expire_unscoped", spy)
        ctx = {"settings": settings, "sessionmaker": sessionmaker}
        assert await trace_tasks.expire(ctx) == 5  # traces only: the log is kept for ever
        assert statements == [2, 2, 1, 0]
        traces, logs, rollups = await counted()
        assert (traces, logs, rollups) == (2, 7, rollups_before)

        ctx["settings"] = settings.model_copy(update={"log_retention_days": 30})
        assert await trace_tasks.expire(ctx) == 5
        traces, logs, rollups = await counted()
        assert (traces, logs) == (2, 2)
        assert rollups == rollups_before  # reports and caps read these: unchanged

    async def test_a_tenant_keeps_its_rows_as_long_as_it_set(
        self, http: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
    ):
        now = utcnow()
        short, longer, default = [await create_tenant(http) for _ in range(3)]
        keys = {}
        for tenant in (short, longer, default):
            keys[tenant.id] = uuid.UUID((await create_key(http, tenant))["id"])
        for tenant, retention in ((short, {"trace_days": 5, "log_days": 5}),
                                  (longer, {"trace_days": 60})):  # fmt: skip
            answer = await http.put(
                "/v1/settings", json={"retention": retention}, headers=tenant.headers
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["retention"] == {"trace_days": None, "log_days": None, **retention}

        def event(tenant: Any, days_ago: int) -> dict[str, Any]:
            request_id = f"req_{uuid.uuid4().hex}"
            return {
                "id": uuid.uuid4(), "request_id": request_id, "tenant_id": uuid.UUID(tenant.id),
                "key_id": keys[tenant.id], "endpoint": "/v1/chat/completions", "model": "gpt-4o",
                "provider": "openai", "status": 200, "cost_micros": 1,
                "created_at": now - timedelta(days=days_ago), "trace_id": request_id,
                "steps": '[{"name":"auth","start_ms":0,"duration_ms":1}]',
            }  # fmt: skip

        events = [event(t, days) for t in (short, longer, default) for days in (10, 40)]
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            assert await insert_events(session, events) == 6

        async def left(model: Any) -> dict[str, int]:
            async with sessionmaker() as session:
                rows = await session.execute(
                    select(model.tenant_id, func.count()).group_by(model.tenant_id)
                )
                return {str(tenant): count for tenant, count in rows}

        ctx = {"settings": settings, "sessionmaker": sessionmaker}  # traces 30 days, logs ever
        await trace_tasks.expire(ctx)
        traces = await left(RequestTrace)
        assert traces.get(str(uuid.UUID(short.id)), 0) == 0  # 5 days: both gone
        assert traces[str(uuid.UUID(longer.id))] == 2  # 60 days: both kept
        assert traces[str(uuid.UUID(default.id))] == 1  # the operator's 30 days
        logs = await left(UsageEvent)
        assert logs.get(str(uuid.UUID(short.id)), 0) == 0  # its own 5 days
        assert logs[str(uuid.UUID(longer.id))] == logs[str(uuid.UUID(default.id))] == 2
        other = await create_tenant(http)  # another tenant's settings never show it
        assert (await http.get("/v1/settings", headers=other.headers)).json()["retention"] == {
            "trace_days": None, "log_days": None,
        }  # fmt: skip

    def test_the_sweep_is_a_background_task(self, settings: Settings):
        from api.background import arq_cron_jobs, tasks

        assert trace_tasks.EXPIRE in {task.name for task in tasks(settings)}
        assert f"cron:{trace_tasks.EXPIRE}" in {job.name for job in arq_cron_jobs(settings)}


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector in the test process: keeps what is posted to /v1/traces."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces":
            self.received.append(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _spans(received: list[bytes]) -> list[Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans = []
    for body in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            for scoped in resource.scope_spans:
                spans.extend(scoped.spans)
    return spans


def _attributes(span: Any) -> dict[str, Any]:
    out = {}
    for item in span.attributes:
        value = item.value
        out[item.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
class TestOpenTelemetry:
    async def test_spans_reach_an_otlp_collector_with_genai_attributes(
        self, settings: Settings, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
    ):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
        _Collector.received = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        # The standard variable, as a base URL: the exporter posts to its /v1/traces.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        try:
            async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
                tenant, headers = await user(http)
                upstream.failures = ["500"]
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
                response = await chat(http, {**headers, "x-trace-id": trace_id})
                assert response.status_code == 200
                spans: list[Any] = []
                for _ in range(100):
                    spans = _spans(_Collector.received)
                    if any(span.name.startswith("chat ") for span in spans):
                        break
                    await asyncio.sleep(0.1)
        finally:
            server.shutdown()
            server.server_close()
        (root,) = [span for span in spans if span.name == "chat gpt-4o"]
        assert root.trace_id.hex() == trace_id
        attributes = _attributes(root)
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.system"] == "openai"
        assert attributes["gen_ai.request.model"] == "gpt-4o"
        assert attributes["gen_ai.response.model"] == "gpt-4o"
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["tollgate.cost_micros"] > 0
        assert attributes["tollgate.tenant_id"] == tenant.id
        assert attributes["tollgate.key_id"]
        children = [span for span in spans if span.parent_span_id == root.span_id]
        names_seen = [span.name for span in children]
        assert {"auth", "limits", "settle", "ledger"} <= set(names_seen)
        attempts = [span for span in children if span.name == "attempt"]
        assert sorted(_attributes(a)["http.response.status_code"] for a in attempts) == [200, 502]
        ledger = next(span for span in children if span.name == "ledger")
        assert ledger.end_time_unix_nano >= ledger.start_time_unix_nano
        assert root.start_time_unix_nano <= min(span.start_time_unix_nano for span in children)


class TestCacheStep:
    async def test_a_miss_and_a_hit_show_the_cache_step(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        settings = await http.put(
            "/v1/settings", json={"cache": {"enabled": True}}, headers=tenant.headers
        )
        assert settings.status_code == 200, settings.text
        key = await create_key(http, tenant)
        missed = await chat(http, {**bearer(key["secret"]), "x-trace-id": "miss"}, temperature=0)
        assert missed.headers["x-cache"] == "MISS"
        await trace_when_settled(http, tenant.headers, "miss")
        for _ in range(50):  # the answer is stored once it is complete
            hit = await chat(http, {**bearer(key["secret"]), "x-trace-id": "hit"}, temperature=0)
            if hit.headers.get("x-cache") == "EXACT_HIT":
                break
            await asyncio.sleep(0.05)
        assert hit.headers["x-trace-id"] == "hit"
        miss_steps = (await trace_when_settled(http, tenant.headers, "miss"))["steps"]
        hit_trace = await trace_when_settled(http, tenant.headers, "hit")
        assert [s["name"] for s in miss_steps].index("cache") < [
            s["name"] for s in miss_steps
        ].index("attempt")
        cache = next(s for s in hit_trace["steps"] if s["name"] == "cache")
        assert cache["hit"] == "exact"
        assert "attempt" not in names(hit_trace)
        assert names(hit_trace)[0] == "auth"
