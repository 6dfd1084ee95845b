"""Thread turns against each provider's fake: tool loops through webhooks (signed, run by the
job queue's worker), webhook failures, history trimming, streaming."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.auth.models import ApiKey
from api.kit.time import utcnow
from api.settings import Settings
from api.tool.models import Tool
from tests.conftest import app_client
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.gemini_upstream import API_KEY as GEMINI_KEY
from tests.fakes.tool_models import ChainingAnthropic, ChainingGemini, ChainingUpstream, ToolHooks

CITY = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
MODELS = ["gpt-4o-mini", "deepseek-chat", "claude-sonnet-4", "gemini-2.5-flash"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[ChainingUpstream, ChainingAnthropic, ChainingGemini, ToolHooks]]:
    openai, anthropic, gemini, hooks = (
        ChainingUpstream(), ChainingAnthropic(), ChainingGemini(), ToolHooks()
    )  # fmt: skip
    openai.start()
    anthropic.start()
    gemini.start()
    hooks.start()
    yield openai, anthropic, gemini, hooks
    for server in (openai, anthropic, gemini, hooks):
        server.stop()


@pytest.fixture
def hooks(fakes: Any) -> ToolHooks:
    for server in fakes:
        server.reset()
    tool_hooks: ToolHooks = fakes[3]
    return tool_hooks


@pytest.fixture
def openai_fake(fakes: Any, hooks: ToolHooks) -> ChainingUpstream:
    fake: ChainingUpstream = fakes[0]
    return fake


@pytest.fixture
async def http(
    settings: Settings, fakes: Any, hooks: ToolHooks
) -> AsyncIterator[httpx.AsyncClient]:
    openai, anthropic, gemini, _ = fakes
    configured = settings.model_copy(
        update={
            "openai_api_key": SecretStr("sk-openai"),
            "openai_base_url": openai.openai_base_url,
            "deepseek_api_key": SecretStr("sk-deepseek"),
            "deepseek_base_url": openai.deepseek_base_url,
            "anthropic_api_key": SecretStr(ANTHROPIC_KEY),
            "anthropic_base_url": anthropic.base_url,
            "gemini_api_key": SecretStr(GEMINI_KEY),
            "gemini_base_url": gemini.base_url,
            "allow_private_webhooks": True,  # the receivers listen on loopback
            "models": {"gpt-4.1-nano": {"provider": "openai", "input": 100_000, "output": 400_000,
                                        "context_window": 600, "max_output_tokens": 100}},
        }
    )  # fmt: skip
    async with app_client(configured) as client:
        yield client


async def _register(
    http: httpx.AsyncClient, tenant: TenantFixture, hooks: ToolHooks, name: str,
    schema: dict[str, Any], **fields: Any,
) -> dict[str, Any]:  # fmt: skip
    response = await http.post(
        "/v1/tools",
        json={"name": name, "description": f"The {name} tool", "input_schema": schema,
              "webhook_url": hooks.url(name), **fields},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    tool: dict[str, Any] = response.json()
    hooks.secrets[name] = tool["signing_secret"]
    return tool


async def _setup(http: httpx.AsyncClient, hooks: ToolHooks, **tool_fields: Any):
    tenant = await create_tenant(http)
    await _register(http, tenant, hooks, "lookup_city", CITY, **tool_fields)
    await _register(http, tenant, hooks, "get_weather", WEATHER, **tool_fields)
    key = await create_key(http, tenant)
    headers = bearer(key["secret"])
    created = await http.post("/v1/threads", json={"system": "Use tools."}, headers=headers)
    return tenant, key, headers, f"/v1/threads/{created.json()['id']}/messages"


class TestToolLoop:
    @pytest.mark.parametrize("model", MODELS)
    async def test_two_round_tool_loop_with_each_provider(
        self, http: httpx.AsyncClient, hooks: ToolHooks, model: str
    ):
        tenant, key, headers, url = await _setup(http, hooks)
        body = {"model": model, "content": "Weather where I live?",
                "tools": ["lookup_city", "get_weather"]}  # fmt: skip
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["stop_reason"] == "end_turn"
        assert answer["content"][0]["text"].startswith("Done: ")
        assert "lookup_city=" in answer["content"][0]["text"]
        assert "get_weather=" in answer["content"][0]["text"]
        # Both webhooks were called, once each, signed, with the call's id as idempotency key.
        assert [c[0] for c in hooks.calls] == ["lookup_city", "get_weather"]
        for _name, call, valid, idempotency_key in hooks.calls:
            assert valid
            assert idempotency_key == call["tool_call_id"]
            assert call["key_id"] == key["id"]
            assert call["thread_id"] in url
        assert hooks.calls[1][1]["input"] == {"city": "example", "unit": "c"}
        listed = (await http.get(url, headers=headers)).json()["data"]
        assert [m["role"] for m in listed] == [
            "user", "assistant", "tool", "assistant", "tool", "assistant"
        ]  # fmt: skip
        first_call = listed[1]["content"][-1]
        assert first_call["type"] == "tool_use"
        assert first_call["name"] == "lookup_city"
        result = listed[2]["content"][0]
        assert result["tool_use_id"] == first_call["id"]
        assert result["is_error"] is False
        assert result["attempts"] == 1
        assert result["latency_ms"] >= 0
        assert {m["turn_id"] for m in listed} == {answer["turn_id"]}
        # One usage event per model call, the tool calls counted in the request log.
        logs = await logs_when_settled(http, tenant, 3)
        assert sorted(entry["tool_calls"] for entry in logs) == [0, 1, 1]
        assert {entry["status"] for entry in logs} == {200}
        assert answer["usage"]["input_tokens"] == sum(e["input_tokens"] for e in logs)
        # The next turn sees the whole exchange (the tools declared again: kept structured).
        again = await http.post(url, json={**body, "content": "thanks"}, headers=headers)
        assert again.status_code == 200, again.text

    async def test_parallel_tool_calls_run_concurrently(
        self, http: httpx.AsyncClient, hooks: ToolHooks, openai_fake: ChainingUpstream
    ):
        openai_fake.parallel = True
        hooks.behaviour.update({"lookup_city": "sleep:0.5", "get_weather": "sleep:0.5"})
        _, _, headers, url = await _setup(http, hooks)
        body = {"model": "gpt-4o-mini", "content": "both", "tools": ["lookup_city", "get_weather"]}
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert hooks.most_active == 2
        roles = [m["role"] for m in (await http.get(url, headers=headers)).json()["data"]]
        assert roles == ["user", "assistant", "tool", "assistant"]

    @pytest.mark.parametrize("behaviour", ["slow", "500", "invalid", "redirect", "huge", "error"])
    async def test_failing_webhook_becomes_an_error_result(
        self, http: httpx.AsyncClient, hooks: ToolHooks, behaviour: str
    ):
        hooks.behaviour["lookup_city"] = behaviour
        _, _, headers, url = await _setup(http, hooks, timeout_ms=300)
        body = {"model": "claude-sonnet-4", "content": "go", "tools": ["lookup_city"]}
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        listed = (await http.get(url, headers=headers)).json()["data"]
        result = listed[2]["content"][0]
        assert result["is_error"] is True
        expected_attempts = 3 if behaviour in ("slow", "500") else 1
        assert result["attempts"] == expected_attempts
        assert len(hooks.calls) == expected_attempts
        assert listed[-1]["role"] == "assistant"
        assert response.json()["stop_reason"] == "end_turn"

    async def test_round_limit_ends_the_loop(self, http: httpx.AsyncClient, hooks: ToolHooks):
        _, _, headers, url = await _setup(http, hooks)
        body = {"model": "claude-sonnet-4", "content": "go", "max_tool_rounds": 1,
                "tools": ["lookup_city", "get_weather"]}  # fmt: skip
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        listed = (await http.get(url, headers=headers)).json()["data"]
        assert [m["role"] for m in listed] == ["user", "assistant", "tool", "assistant"]
        assert len(hooks.calls) == 1

    async def test_streamed_tool_loop(self, http: httpx.AsyncClient, hooks: ToolHooks):
        _, _, headers, _ = await _setup(http, hooks)
        for model in ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash"):
            hooks.calls.clear()
            created = await http.post("/v1/threads", json={}, headers=headers)
            url = f"/v1/threads/{created.json()['id']}/messages"
            body = {"model": model, "content": "go", "stream": True,
                    "tools": ["lookup_city", "get_weather"]}  # fmt: skip
            async with http.stream("POST", url, json=body, headers=headers) as response:
                assert response.status_code == 200
                raw = (await response.aread()).decode()
            events = [
                line[len("event: ") :] for line in raw.splitlines() if line.startswith("event: ")
            ]
            assert events.count("message_start") == 3, raw
            assert events.count("message_stop") == 3
            assert events.count("thread.tool_result") == 2
            assert events[-1] == "thread.message.completed"
            final = json.loads(raw.strip().splitlines()[-1][len("data: ") :])
            assert final["message"]["content"][0]["text"].startswith("Done: ")
            assert len(hooks.calls) == 2
            assert all(valid for _, _, valid, _ in hooks.calls)


def _pending_connection(listener: socket.socket) -> bool:
    """Whether anyone connected: the kernel queues connections without an accept()."""
    listener.setblocking(False)
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


async def _one_tool_turn(
    http: httpx.AsyncClient, hooks: ToolHooks, schema: dict[str, Any]
) -> dict[str, Any]:
    """A turn offered one tool with `schema`; the tool's result as stored."""
    tenant = await create_tenant(http)
    await _register(http, tenant, hooks, "lookup_city", schema)
    headers = bearer((await create_key(http, tenant))["secret"])
    created = await http.post("/v1/threads", json={}, headers=headers)
    url = f"/v1/threads/{created.json()['id']}/messages"
    body = {"model": "gpt-4o-mini", "content": "go", "tools": ["lookup_city"]}
    response = await http.post(url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    listed = (await http.get(url, headers=headers)).json()["data"]
    result: dict[str, Any] = listed[2]["content"][0]
    return result


NAMED = {
    "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
    "allOf": [{"$ref": "#/$defs/Named"}],
}  # fmt: skip


class TestSchemas:
    async def test_a_remote_reference_is_refused_and_never_fetched(
        self, http: httpx.AsyncClient, hooks: ToolHooks
    ):
        tenant = await create_tenant(http)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            remote = f"http://127.0.0.1:{listener.getsockname()[1]}/x.json"
            schemas = [
                {"type": "object", "properties": {"a": {"$ref": remote}}},
                {"type": "object", "$defs": {"b": {"items": {"$ref": remote + "#/c"}}}},
                {"type": "object", "properties": {"a": {"$ref": "other.json#/c"}}},
                {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                 "properties": {"a": {"$dynamicRef": remote}}},
            ]  # fmt: skip
            for schema in schemas:
                response = await http.post(
                    "/v1/tools",
                    json={"name": "lookup_city", "input_schema": schema,
                          "webhook_url": hooks.url("lookup_city")},
                    headers=tenant.headers,
                )  # fmt: skip
                assert response.status_code == 400, schema
                assert response.json()["error"]["param"] == "input_schema"
            assert not _pending_connection(listener)

    async def test_a_remote_reference_stored_earlier_is_not_fetched_either(
        self, http: httpx.AsyncClient, hooks: ToolHooks, engine: AsyncEngine
    ):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            remote = f"http://127.0.0.1:{listener.getsockname()[1]}/x.json"
            tenant = await create_tenant(http)
            tool = await _register(http, tenant, hooks, "lookup_city", CITY)
            async with engine.begin() as connection:  # from before references were checked
                await connection.execute(
                    update(Tool).where(Tool.id == uuid.UUID(tool["id"]))
                    .values(input_schema={**CITY, "properties": {"name": {"$ref": remote}}})
                )  # fmt: skip
            headers = bearer((await create_key(http, tenant))["secret"])
            created = await http.post("/v1/threads", json={}, headers=headers)
            url = f"/v1/threads/{created.json()['id']}/messages"
            body = {"model": "gpt-4o-mini", "content": "go", "tools": ["lookup_city"]}
            assert (await http.post(url, json=body, headers=headers)).status_code == 200
            result = (await http.get(url, headers=headers)).json()["data"][2]["content"][0]
            assert result["is_error"] is True
            assert remote in result["content"]
            assert not _pending_connection(listener)
        assert hooks.calls == []

    async def test_a_reference_within_the_schema_is_followed(
        self, http: httpx.AsyncClient, hooks: ToolHooks
    ):
        roomy = {**NAMED, "$defs": {"Named": {"properties": {"name": {"maxLength": 20}}}}}
        result = await _one_tool_turn(http, hooks, roomy)
        assert (result["is_error"], result["content"]) == (False, 'lookup_city={"name": "example"}')
        hooks.calls.clear()
        tight = {**NAMED, "$defs": {"Named": {"properties": {"name": {"maxLength": 3}}}}}
        result = await _one_tool_turn(http, hooks, tight)
        assert result["is_error"] is True
        assert "does not match the tool's schema: 'example' is too long" in result["content"]
        assert hooks.calls == []

    async def test_a_catastrophic_pattern_is_refused_in_time_and_the_api_stays_responsive(
        self, http: httpx.AsyncClient, hooks: ToolHooks
    ):
        # The fake model sends the enum's value: 2^40 ways for `re` to fail to match it.
        evil = {"type": "object", "required": ["name"], "properties": {"name": {
            "type": "string", "enum": ["a" * 40 + "!"], "pattern": "^(a+)+$"}}}  # fmt: skip
        turn = asyncio.create_task(_one_tool_turn(http, hooks, evil))
        latencies = []
        while not turn.done():
            started = time.perf_counter()
            assert (await http.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
        result = await turn
        assert result["is_error"] is True
        assert result["content"].endswith("against the tool's schema in time.")
        assert hooks.calls == []
        assert len(latencies) > 20  # measured all along the check (its deadline is 1 s)
        latencies.sort()
        slowest, p90 = latencies[-1], latencies[len(latencies) * 9 // 10]
        print(f"/healthz during the check: p90 {p90 * 1e3:.1f} ms, max {slowest * 1e3:.1f} ms")  # noqa: T201
        # Typically ~1 ms, at most ~20 ms alone; one sample took 275 ms while another suite ran
        # on the same 2 cores, so only the 90th percentile is held to 100 ms. A check on the
        # loop would hold every request for all of it (2^40 steps), past any bound here.
        assert p90 < 0.1
        assert slowest < 1.0


class TestTrimming:
    async def test_a_thread_longer_than_the_window_is_trimmed_to_fit(
        self, http: httpx.AsyncClient, hooks: ToolHooks, openai_fake: ChainingUpstream
    ):
        openai_fake.context_window = 600  # the catalog says gpt-4.1-nano has 600 (see fixture)
        openai_fake.mode = "generate"
        openai_fake.words = 20
        tenant = await create_tenant(http)
        headers = bearer((await create_key(http, tenant))["secret"])
        created = await http.post("/v1/threads", json={"system": "Be brief."}, headers=headers)
        url = f"/v1/threads/{created.json()['id']}/messages"
        said = " ".join(["lorem"] * 60)
        for turn in range(12):
            response = await http.post(
                url, json={"model": "gpt-4.1-nano", "content": f"{turn} {said}", "max_tokens": 50},
                headers=headers,
            )  # fmt: skip
            assert response.status_code == 200, response.text
        assert all(count + 50 <= 600 for count in openai_fake.prompt_tokens)
        sent = openai_fake.seen[-1].body["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert sent[-1]["content"].startswith("11 ")
        assert len(sent) < 2 * 12  # older turns were dropped, whole
        assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * ((len(sent) - 2) // 2) + [
            "user"
        ]
        listed = (await http.get(url + "?limit=100", headers=headers)).json()["data"]
        assert len(listed) == 24  # the stored thread keeps everything

    async def test_a_message_that_cannot_fit_is_refused(
        self, http: httpx.AsyncClient, hooks: ToolHooks
    ):
        tenant = await create_tenant(http)
        headers = bearer((await create_key(http, tenant))["secret"])
        created = await http.post("/v1/threads", json={}, headers=headers)
        url = f"/v1/threads/{created.json()['id']}/messages"
        response = await http.post(
            url, json={"model": "gpt-4.1-nano", "content": "word " * 700}, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "content"
        assert (await http.get(url, headers=headers)).json()["data"] == []


class TestFailures:
    async def test_a_stream_that_fails_midway_persists_nothing(
        self, http: httpx.AsyncClient, hooks: ToolHooks, fakes: Any
    ):
        anthropic_fake: ChainingAnthropic = fakes[1]
        anthropic_fake.mode = "midstream_error"
        tenant, _, headers, url = await _setup(http, hooks)
        body = {"model": "claude-sonnet-4", "content": "hi", "stream": True}
        async with http.stream("POST", url, json=body, headers=headers) as response:
            assert response.status_code == 200
            raw = (await response.aread()).decode()
        assert "event: error" in raw
        assert "thread.message.completed" not in raw
        assert (await http.get(url, headers=headers)).json()["data"] == []
        logs = await logs_when_settled(http, tenant, 1)
        assert logs[0]["status"] >= 500

    async def test_a_refused_stream_is_an_error_response(
        self, http: httpx.AsyncClient, hooks: ToolHooks
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, allowed_providers=["openai"])
        created = await http.post("/v1/threads", json={}, headers=bearer(key["secret"]))
        url = f"/v1/threads/{created.json()['id']}/messages"
        body = {"model": "claude-sonnet-4", "content": "hi", "stream": True}
        response = await http.post(url, json=body, headers=bearer(key["secret"]))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "provider_not_allowed"

    async def test_a_failed_model_call_persists_nothing(
        self, http: httpx.AsyncClient, hooks: ToolHooks, openai_fake: ChainingUpstream
    ):
        tenant, _, headers, url = await _setup(http, hooks)
        openai_fake.mode = "500"
        keyed = {**headers, "Idempotency-Key": "k1"}
        response = await http.post(
            url, json={"model": "gpt-4o-mini", "content": "hi"}, headers=keyed
        )
        assert response.status_code == 502
        assert (await http.get(url, headers=headers)).json()["data"] == []
        logs = await logs_when_settled(http, tenant, 1)
        assert logs[0]["status"] == 502
        openai_fake.mode = "ok"
        retried = await http.post(
            url, json={"model": "gpt-4o-mini", "content": "hi"}, headers=keyed
        )
        assert retried.status_code == 200, retried.text
        replayed = await http.post(
            url, json={"model": "gpt-4o-mini", "content": "hi"}, headers=keyed
        )
        assert replayed.json() == retried.json()
        assert len((await http.get(url, headers=headers)).json()["data"]) == 2


async def _first_tool_called(hooks: ToolHooks) -> None:
    for _ in range(1000):  # the receiver runs in its own thread: poll it
        if hooks.calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no tool was called")


async def _change_key(
    http: httpx.AsyncClient, engine: AsyncEngine, tenant: TenantFixture, key_id: str, how: str
) -> None:
    if how == "revoke":
        response = await http.delete(f"/v1/keys/{key_id}", headers=tenant.headers)
        assert response.status_code == 200, response.text
    else:  # as a failed payment does (api/billing), behind the API's back
        async with engine.begin() as connection:
            await connection.execute(
                update(ApiKey).where(ApiKey.id == uuid.UUID(key_id)).values(suspended_at=utcnow())
            )


class TestKeyChangedMidLoop:
    @pytest.mark.parametrize(
        ("how", "status", "code"),
        [("revoke", 401, "invalid_api_key"), ("suspend", 402, "payment_required")],
    )
    async def test_the_next_model_round_gets_a_new_requests_error(
        self, http: httpx.AsyncClient, hooks: ToolHooks, engine: AsyncEngine, how: str,
        status: int, code: str,
    ):  # fmt: skip
        hooks.behaviour["lookup_city"] = "sleep:1"
        tenant, key, headers, url = await _setup(http, hooks)
        body = {"model": "gpt-4o-mini", "content": "go", "tools": ["lookup_city", "get_weather"]}
        turn = asyncio.create_task(http.post(url, json=body, headers=headers))
        await _first_tool_called(hooks)
        await _change_key(http, engine, tenant, key["id"], how)
        response = await turn
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        assert [name for name, *_ in hooks.calls] == ["lookup_city"]  # no second round
        assert (await http.get(url, headers=tenant.headers)).json()["data"] == []
        logs = await logs_when_settled(http, tenant, 1)  # the first model call, and no other
        assert [entry["status"] for entry in logs] == [200]

    async def test_a_streamed_loop_ends_with_an_error_event(
        self, http: httpx.AsyncClient, hooks: ToolHooks, engine: AsyncEngine
    ):
        hooks.behaviour["lookup_city"] = "sleep:1"
        tenant, key, headers, url = await _setup(http, hooks)
        body = {"model": "claude-sonnet-4", "content": "go", "stream": True,
                "tools": ["lookup_city", "get_weather"]}  # fmt: skip

        async def read() -> str:
            async with http.stream("POST", url, json=body, headers=headers) as response:
                assert response.status_code == 200
                return (await response.aread()).decode()

        turn = asyncio.create_task(read())
        await _first_tool_called(hooks)
        await _change_key(http, engine, tenant, key["id"], "revoke")
        raw = await turn
        assert raw.count("event: message_start") == 1
        assert "event: error" in raw
        assert "authentication_error" in raw
        assert "thread.message.completed" not in raw
        assert (await http.get(url, headers=tenant.headers)).json()["data"] == []
