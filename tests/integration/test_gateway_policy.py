"""What the gateway decides before any upstream call: model, provider, access, budget, test keys."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.kit.time import utcnow
from api.usage.rollups import insert_events
from tests.factories.chat import HELLO, WEATHER_TOOL
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled, usage_when_settled
from tests.fakes.upstream import FakeUpstream


async def _chat(http: httpx.AsyncClient, secret: str, **body: object) -> httpx.Response:
    payload = {"model": "gpt-4o", "messages": HELLO, **body}
    return await http.post("/v1/chat/completions", json=payload, headers=bearer(secret))


class TestRouting:
    @pytest.mark.parametrize("model", ["gpt-5-imaginary", "openai/claude-sonnet-4", "acme/gpt-4o"])
    async def test_unknown_model(self, http: httpx.AsyncClient, upstream: FakeUpstream, model: str):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await _chat(http, key["secret"], model=model)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_model"
        assert response.json()["error"]["param"] == "model"
        assert upstream.seen == []

    async def test_provider_without_credentials(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await _chat(http, key["secret"], model="gemini-2.5-flash")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "provider_not_configured"
        assert upstream.seen == []

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"model": None}, "model"),
            ({"messages": []}, "messages"),
            ({"messages": "hi"}, "messages"),
            ({"messages": [{"content": "no role"}]}, "messages"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"max_completion_tokens": "many"}, "max_completion_tokens"),
            ({"stream": "yes"}, "stream"),
            ({"stream_options": "usage"}, "stream_options"),
        ],
    )
    async def test_bad_bodies_never_reach_upstream(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, body: dict[str, object], param: str
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await _chat(http, key["secret"], **body)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == param
        assert upstream.seen == []
        log = (await logs_when_settled(http, tenant, 1))[0]
        assert (log["status"], log["error_code"], log["cost_micros"]) == (400, "invalid_request", 0)

    @pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff"])
    async def test_malformed_json(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, raw: bytes
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        response = await http.post(
            "/v1/chat/completions", content=raw, headers=bearer(key["secret"])
        )
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    async def test_missing_and_bad_keys(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        missing = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}
        )
        assert missing.status_code == 401
        assert missing.headers["x-should-retry"] == "false"
        bad = await _chat(http, "qlk_live_" + "x" * 43)
        assert bad.status_code == 401
        assert upstream.seen == []


class TestAccessControl:
    async def test_provider_and_model_allow_lists(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        only_deepseek = await create_key(http, tenant, allowed_providers=["deepseek"])
        response = await _chat(http, only_deepseek["secret"])
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "provider_not_allowed"
        only_mini = await create_key(http, tenant, allowed_models=["gpt-4o-mini"])
        response = await _chat(http, only_mini["secret"])
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "model_not_allowed"
        assert upstream.seen == []
        allowed = await _chat(http, only_mini["secret"], model="gpt-4o-mini")
        assert allowed.status_code == 200
        logs = await logs_when_settled(http, tenant, 3)
        assert sorted(log["status"] for log in logs) == [200, 403, 403]
        assert all(log["cost_micros"] == 0 for log in logs if log["status"] == 403)


class TestBudget:
    async def test_key_over_its_cap_gets_402_and_upstream_sees_nothing(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=0.01)
        first = await _chat(http, key["secret"])  # costs $0.014093: over the $0.01 cap
        assert first.status_code == 200
        await usage_when_settled(http, tenant, 1)
        second = await _chat(http, key["secret"])
        assert second.status_code == 402
        assert second.json()["error"]["code"] == "budget_exceeded"
        assert second.headers["x-should-retry"] == "false"
        assert "retry-after" not in second.headers
        assert len(upstream.seen) == 1
        raised = await http.patch(
            f"/v1/keys/{key['id']}", json={"max_spend_usd": 1}, headers=tenant.headers
        )
        assert raised.status_code == 200
        assert (await _chat(http, key["secret"])).status_code == 200  # PATCH applies at once

    async def test_daily_spend_limit_counts_only_today(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        key = await create_key(
            http, tenant, limits=[{"metric": "spend_usd", "period": "day", "max": 1}]
        )
        async with AsyncSession(engine) as session, session.begin():
            await insert_events(
                session,
                [{
                    "id": uuid.uuid4(), "request_id": "req_x", "tenant_id": uuid.UUID(tenant.id),
                    "key_id": uuid.UUID(key["id"]), "endpoint": "/v1/chat/completions",
                    "model": "gpt-4o", "provider": "openai", "status": 200,
                    "cost_micros": 1_000_000, "created_at": utcnow(),
                }],
            )  # fmt: skip
        response = await _chat(http, key["secret"])
        assert response.status_code == 402
        assert upstream.seen == []


class TestTestKeys:
    async def test_mock_answers_without_upstream_and_costs_nothing(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, test=True)
        for model in ("gpt-4o", "claude-sonnet-4", "gemini-2.5-pro"):
            response = await _chat(http, key["secret"], model=model)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["provider"] == "mock"
            assert body["choices"][0]["message"]["content"].startswith("This is a mock response")
            assert body["usage"]["prompt_tokens"] > 0
        assert upstream.seen == []
        again = (await _chat(http, key["secret"])).json()["choices"][0]["message"]["content"]
        assert again == body["choices"][0]["message"]["content"]  # deterministic
        usage = await usage_when_settled(http, tenant, 4)
        assert usage["totals"]["cost_micros"] == 0
        assert usage["totals"]["input_tokens"] > 0

    async def test_mock_streams_and_calls_tools(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, test=True)
        response = await _chat(http, key["secret"], tools=[WEATHER_TOOL])
        call = response.json()["choices"][0]["message"]["tool_calls"][0]
        assert call["function"] == {"name": "get_weather", "arguments": '{"city":"example"}'}
        streamed = await _chat(http, key["secret"], stream=True)
        assert streamed.text.rstrip().endswith("data: [DONE]")
        lines = streamed.text.splitlines()
        chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text.startswith("This is a mock response")


class TestModels:
    async def test_lists_configured_providers_with_prices(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        body = (await http.get("/v1/models", headers=bearer(key["secret"]))).json()
        assert body["object"] == "list"
        assert body["has_more"] is False
        by_id = {entry["id"]: entry for entry in body["data"]}
        assert {"gpt-4o", "deepseek-chat"} <= set(by_id)
        assert not any(entry["provider"] == "gemini" for entry in body["data"])
        gpt = by_id["gpt-4o"]
        assert gpt["pricing"] == {
            "input": 2_500_000,
            "cached_input": 1_250_000,
            "output": 10_000_000,
            "cache_write": 2_500_000,  # OpenAI bills cache writes as plain input
            "web_search": 0,
        }
        assert (gpt["object"], gpt["type"], gpt["owned_by"]) == ("model", "model", "openai")
        assert body["first_id"] == body["data"][0]["id"]

    async def test_allow_list_narrows_the_list_and_test_keys_see_all(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        narrow = await create_key(http, tenant, allowed_models=["gpt-4o-mini"])
        ids = [
            m["id"]
            for m in (await http.get("/v1/models", headers=bearer(narrow["secret"]))).json()["data"]
        ]
        assert ids == ["gpt-4o-mini"]
        test = await create_key(http, tenant, test=True)
        providers = {
            m["provider"]
            for m in (await http.get("/v1/models", headers=bearer(test["secret"]))).json()["data"]
        }
        assert providers == {"openai", "anthropic", "gemini", "deepseek"}
