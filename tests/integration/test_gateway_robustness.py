"""Odd upstream answers and odd client input still end in a proper answer and one usage event."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_engine, create_sessionmaker
from api.usage.ledger import BatchWriter, UsageRecord
from api.usage.models import UsageEvent
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.upstream import FakeUpstream


async def _chat(http: httpx.AsyncClient, secret: str, **body: object) -> httpx.Response:
    payload = {"model": "gpt-4o", "messages": HELLO, **body}
    return await http.post("/v1/chat/completions", json=payload, headers=bearer(secret))


class TestOddUpstreams:
    async def test_non_json_success_is_a_502_and_logged(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        upstream.mode = "html"
        response = await _chat(http, key["secret"])
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
        log = (await logs_when_settled(http, tenant, 1))[0]
        assert (log["status"], log["cost_micros"]) == (502, 0)

    @pytest.mark.parametrize(("status", "retry"), [(402, "false"), (415, "false"), (409, "true")])
    async def test_other_client_errors_pass_through(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, status: int, retry: str
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        upstream.mode = f"status_{status}"
        response = await _chat(http, key["secret"])
        assert response.status_code == status
        assert response.json()["error"]["code"] == f"c{status}"
        assert response.headers["x-should-retry"] == retry

    async def test_long_upstream_error_code_does_not_jam_the_ledger(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        upstream.mode = "status_422_longcode"  # a 100-character code; the column holds 64
        response = await _chat(http, key["secret"])
        assert response.json()["error"]["code"] == "x" * 64
        upstream.mode = "ok"
        assert (await _chat(http, key["secret"])).status_code == 200
        logs = await logs_when_settled(http, tenant, 2)
        assert sorted(log["status"] for log in logs) == [200, 422]


class TestOddClients:
    @pytest.mark.parametrize(
        "extra",
        [
            {"tool_choice": {"function": "f"}, "tools": [{"type": "function", "function": {}}]},
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"required": 5}}}
                ]
            },
            {"tools": "nope"},
            {"messages": [{"role": "assistant", "tool_calls": 5}, *HELLO]},
            {"messages": [{"role": "user", "content": [1, {"type": "text", "text": 2}]}]},
        ],
    )
    async def test_mock_survives_strange_shapes(
        self, http: httpx.AsyncClient, extra: dict[str, object]
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, test=True)
        response = await _chat(http, key["secret"], **extra)
        assert response.status_code == 200, response.text

    async def test_naive_or_broken_cursors_are_400(self, http: httpx.AsyncClient):
        import base64
        import json

        tenant = await create_tenant(http)
        naive = json.dumps(["2026-01-01T00:00:00", str(uuid.uuid4())]).encode()
        cursor = base64.urlsafe_b64encode(naive).decode().rstrip("=")
        for path in ("/v1/keys", "/v1/logs"):
            response = await http.get(path, params={"cursor": cursor}, headers=tenant.headers)
            assert response.status_code == 400, path
        extreme = await http.get(
            "/v1/usage", params={"start": "0001-01-01T00:00:00+14:00"}, headers=tenant.headers
        )
        assert extreme.status_code == 400

    async def test_made_up_models_do_not_grow_metric_series(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        for index in range(5):
            await _chat(http, key["secret"], model=f"made-up-{index}")
        text = (await http.get("/metrics", headers=bearer(ADMIN_TOKEN))).text
        assert "made-up" not in text
        assert 'model="unknown"' in text


class TestLedgerWriter:
    async def test_a_refused_row_does_not_block_the_others(
        self, http: httpx.AsyncClient, engine: AsyncEngine, database_url: str
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        recorder_engine = create_engine(database_url)
        writer = BatchWriter(create_sessionmaker(recorder_engine))
        writer.start()

        def event(key_id: uuid.UUID) -> UsageRecord:
            return UsageRecord(
                request_id="req_t", tenant_id=uuid.UUID(tenant.id), key_id=key_id,
                endpoint="/v1/chat/completions", model="gpt-4o", provider="openai", status=200,
            )  # fmt: skip

        good = uuid.UUID(key["id"])
        for event_key in (good, uuid.uuid4(), good, good):  # the second names no key: refused
            writer.record(event(event_key))
        await writer.close(timeout_seconds=10)
        await recorder_engine.dispose()
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count()).select_from(UsageEvent).where(UsageEvent.key_id == good)
            )
        assert count == 3
