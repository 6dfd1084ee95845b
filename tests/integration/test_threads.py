"""Threads and tools as a tenant's management API: CRUD, ownership and tenant isolation, and
turns answered by the built-in mock provider (test keys), on both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.settings import Settings
from tests.conftest import app_client
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.upstream import FakeUpstream

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


async def _tool(client: httpx.AsyncClient, tenant: TenantFixture, **fields: Any) -> httpx.Response:
    body = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": SCHEMA,
        "webhook_url": "http://127.0.0.1:9/hook",
        **fields,
    }
    return await client.post("/v1/tools", json=body, headers=tenant.headers)


async def _thread(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await client.post("/v1/threads", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def hooks_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Webhooks on loopback allowed, as the tests' receivers listen there."""
    async with app_client(settings.model_copy(update={"allow_private_webhooks": True})) as http:
        yield http


@pytest.fixture
async def upstream_client(gateway_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Live keys' turns go to the fake OpenAI/DeepSeek upstream, which counts the calls."""
    async with app_client(gateway_settings) as http:
        yield http


class TestThreadCrud:
    async def test_create_get_list_delete(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant, test=True)
        headers = bearer(key["secret"])
        thread = await _thread(client, headers, system="Be brief.", metadata={"user": "u1"})
        assert thread["object"] == "thread"
        assert thread["key_id"] == key["id"]
        assert thread["system"] == "Be brief."
        assert thread["metadata"] == {"user": "u1"}
        got = await client.get(f"/v1/threads/{thread['id']}", headers=headers)
        assert got.json() == thread
        await _thread(client, headers)
        page = (await client.get("/v1/threads?limit=1", headers=headers)).json()
        assert page["has_more"] is True
        assert len(page["data"]) == 1
        rest = await client.get(f"/v1/threads?cursor={page['next_cursor']}", headers=headers)
        ids = {page["data"][0]["id"], rest.json()["data"][0]["id"]}
        assert thread["id"] in ids
        assert len(ids) == 2
        deleted = await client.delete(f"/v1/threads/{thread['id']}", headers=headers)
        assert deleted.json() == {"object": "thread.deleted", "id": thread["id"], "deleted": True}
        gone = await client.get(f"/v1/threads/{thread['id']}", headers=headers)
        assert gone.status_code == 404

    async def test_bad_bodies_are_400_with_the_field(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant, test=True)
        headers = bearer(key["secret"])
        bad = await client.post("/v1/threads", json={"sistem": "x"}, headers=headers)
        assert bad.status_code == 400
        thread = await _thread(client, headers)
        url = f"/v1/threads/{thread['id']}/messages"
        for body, param in (
            ({"content": "hi"}, "model"),
            ({"model": "gpt-4o-mini", "content": [{"type": "audio"}]}, "content[0]"),
            ({"model": "no-such-model", "content": "hi"}, "model"),
            ({"model": "gpt-4o-mini", "content": "hi", "tools": ["nope"]}, "tools"),
        ):
            response = await client.post(url, json=body, headers=headers)
            assert response.status_code == 400, response.text
            assert param in (response.json()["error"]["param"] or ""), response.text


class TestToolCrud:
    async def test_register_shows_the_secret_once_and_rotates_it(
        self, hooks_client: httpx.AsyncClient
    ):
        client = hooks_client
        tenant = await create_tenant(client)
        created = await _tool(client, tenant)
        assert created.status_code == 201, created.text
        tool = created.json()
        assert tool["object"] == "tool"
        assert tool["timeout_ms"] == 30_000
        assert tool["signing_secret"].startswith("whsec_")
        shown = (await client.get(f"/v1/tools/{tool['id']}", headers=tenant.headers)).json()
        assert "signing_secret" not in shown
        listed = (await client.get("/v1/tools", headers=tenant.headers)).json()
        assert [t["id"] for t in listed["data"]] == [tool["id"]]
        assert "signing_secret" not in listed["data"][0]
        rotated = await client.post(f"/v1/tools/{tool['id']}/rotate-secret", headers=tenant.headers)
        assert rotated.status_code == 200
        assert rotated.json()["signing_secret"] not in (None, tool["signing_secret"])
        again = await _tool(client, tenant)
        assert again.status_code == 409
        deleted = await client.delete(f"/v1/tools/{tool['id']}", headers=tenant.headers)
        assert deleted.json()["deleted"] is True
        assert (
            await client.get(f"/v1/tools/{tool['id']}", headers=tenant.headers)
        ).status_code == 404

    async def test_schema_and_url_are_checked(self, hooks_client: httpx.AsyncClient):
        client = hooks_client
        tenant = await create_tenant(client)
        cases = [
            (
                {"input_schema": {"type": "object", "properties": {"a": {"type": "nope"}}}},
                "input_schema",
            ),
            ({"input_schema": {"type": "string"}}, "input_schema"),
            ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
            ({"name": "has space"}, "name"),
        ]
        for fields, param in cases:
            response = await _tool(client, tenant, **fields)
            assert response.status_code == 400, response.text
            assert param in (response.json()["error"]["param"] or ""), response.text

    async def test_private_webhooks_are_refused_unless_allowed(self, client: httpx.AsyncClient):
        # The default settings do not allow private addresses (SSRF).
        tenant = await create_tenant(client)
        for url in ("http://127.0.0.1:8080/x", "http://10.0.0.1/x", "http://localhost/x",
                    "http://[::1]/x", "http://169.254.169.254/latest/meta-data"):  # fmt: skip
            response = await _tool(client, tenant, webhook_url=url)
            assert response.status_code == 400, url
            assert response.json()["error"]["param"] == "webhook_url"


class TestIsolation:
    async def test_threads_are_the_keys_own_and_the_tenants_master_sees_all(
        self, client: httpx.AsyncClient
    ):
        alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
        one = bearer((await create_key(client, alpha, name="one", test=True))["secret"])
        two = bearer((await create_key(client, alpha, name="two", test=True))["secret"])
        other = bearer((await create_key(client, beta, name="b", test=True))["secret"])
        mine = await _thread(client, one, system="secret")
        sent = await client.post(
            f"/v1/threads/{mine['id']}/messages",
            json={"model": "gpt-4o-mini", "content": "hello"},
            headers=one,
        )
        assert sent.status_code == 200, sent.text
        base = f"/v1/threads/{mine['id']}"
        for outsider in (two, other, beta.headers):
            for method, url, body in (
                ("GET", base, None),
                ("GET", base + "/messages", None),
                ("POST", base + "/messages", {"model": "gpt-4o-mini", "content": "hi"}),
                ("DELETE", base, None),
            ):
                response = await client.request(method, url, json=body, headers=outsider)
                assert response.status_code == 404, (method, url, response.text)
                assert response.json()["error"]["code"] == "not_found"
            listed = (await client.get("/v1/threads", headers=outsider)).json()
            assert mine["id"] not in {t["id"] for t in listed["data"]}
        # The tenant's master key sees and reads it; the owner still has it all.
        assert (await client.get(base, headers=alpha.headers)).status_code == 200
        listed = (await client.get("/v1/threads", headers=alpha.headers)).json()
        assert mine["id"] in {t["id"] for t in listed["data"]}
        messages = (await client.get(base + "/messages", headers=alpha.headers)).json()["data"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert (await client.get(base + "/messages", headers=one)).json()["data"] == messages

    async def test_tools_are_the_tenants_and_need_the_master_key(
        self, hooks_client: httpx.AsyncClient
    ):
        client = hooks_client
        alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
        standard = bearer((await create_key(client, alpha, test=True))["secret"])
        tool = (await _tool(client, alpha)).json()
        base = f"/v1/tools/{tool['id']}"
        for method, url in (("GET", base), ("DELETE", base), ("POST", base + "/rotate-secret")):
            response = await client.request(method, url, headers=beta.headers)
            assert response.status_code == 404, (method, url)
            response = await client.request(method, url, headers=standard)
            assert response.status_code == 403, (method, url)
            assert response.json()["error"]["code"] == "insufficient_scope"
        assert (await client.get("/v1/tools", headers=beta.headers)).json()["data"] == []
        created = await client.post(
            "/v1/tools", headers=standard,
            json={"name": "y", "input_schema": SCHEMA, "webhook_url": "http://127.0.0.1:9/h"},
        )  # fmt: skip
        assert created.status_code == 403
        # Another tenant's tool cannot be named in a turn: it does not exist for them.
        other = bearer((await create_key(client, beta, test=True))["secret"])
        thread = await _thread(client, other)
        turn = await client.post(
            f"/v1/threads/{thread['id']}/messages",
            json={"model": "gpt-4o-mini", "content": "hi", "tools": ["get_weather"]},
            headers=other,
        )
        assert turn.status_code == 400
        assert turn.json()["error"]["param"] == "tools"
        assert (await client.get(base, headers=alpha.headers)).status_code == 200


class TestTurnsWithTheMock:
    async def test_turns_build_an_ordered_history(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = bearer((await create_key(client, tenant, test=True))["secret"])
        thread = await _thread(client, headers, system="Be brief.")
        url = f"/v1/threads/{thread['id']}/messages"
        first = await client.post(
            url, json={"model": "gpt-4o-mini", "content": "one"}, headers=headers
        )
        assert first.status_code == 200, first.text
        answer = first.json()
        assert answer["object"] == "thread.message"
        assert answer["role"] == "assistant"
        assert answer["provider"] == "mock"
        assert answer["stop_reason"] == "end_turn"
        assert "You said: one" in answer["content"][0]["text"]
        assert answer["usage"]["input_tokens"] > 0
        assert answer["usage"]["cost_micros"] == 0
        await client.post(url, json={"model": "claude-sonnet-4", "content": "two"}, headers=headers)
        listed = (await client.get(url, headers=headers)).json()["data"]
        assert [m["role"] for m in listed] == ["user", "assistant"] * 2
        assert [m["seq"] for m in listed] == [0, 1, 2, 3]
        assert listed[2]["content"] == [{"type": "text", "text": "two"}]
        page = (await client.get(url + "?limit=3&order=desc", headers=headers)).json()
        assert [m["seq"] for m in page["data"]] == [3, 2, 1]
        assert page["has_more"]
        rest = (
            await client.get(url + f"?order=desc&cursor={page['next_cursor']}", headers=headers)
        ).json()
        assert [m["seq"] for m in rest["data"]] == [0]
        assert not rest["has_more"]
        shown = (await client.get(f"/v1/threads/{thread['id']}", headers=headers)).json()
        assert shown["message_count"] == 4

    async def test_idempotency_key_replays_the_turn(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = bearer((await create_key(client, tenant, test=True))["secret"])
        thread = await _thread(client, headers)
        url = f"/v1/threads/{thread['id']}/messages"
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        body = {"model": "gpt-4o-mini", "content": "once"}
        first, again = await asyncio.gather(
            client.post(url, json=body, headers=keyed), client.post(url, json=body, headers=keyed)
        )
        assert first.status_code == again.status_code == 200
        assert first.json()["id"] == again.json()["id"]
        listed = (await client.get(url, headers=headers)).json()["data"]
        assert len(listed) == 2

    async def test_concurrent_turns_are_serialised(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = bearer((await create_key(client, tenant, test=True))["secret"])
        thread = await _thread(client, headers)
        url = f"/v1/threads/{thread['id']}/messages"
        said = [f"message {i}" for i in range(6)]
        responses = await asyncio.gather(
            *(
                client.post(url, json={"model": "gpt-4o-mini", "content": s}, headers=headers)
                for s in said
            )
        )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        listed = (await client.get(url + "?limit=100", headers=headers)).json()["data"]
        assert [m["seq"] for m in listed] == list(range(12))
        assert [m["role"] for m in listed] == ["user", "assistant"] * 6
        for user, assistant in zip(listed[::2], listed[1::2], strict=True):
            assert user["turn_id"] == assistant["turn_id"]
            assert user["content"][0]["text"] in assistant["content"][0]["text"]
        assert sorted(m["content"][0]["text"] for m in listed[::2]) == said


class TestIdempotencyKeyMismatch:
    """Stripe's contract, as `POST /v1/keys` has it: the same key with another body is a 400."""

    @staticmethod
    async def _setup(http: httpx.AsyncClient) -> tuple[TenantFixture, dict[str, str], str]:
        tenant = await create_tenant(http)
        headers = bearer((await create_key(http, tenant))["secret"])
        thread = await _thread(http, headers)
        return tenant, headers, f"/v1/threads/{thread['id']}/messages"

    @staticmethod
    def _assert_refused(response: httpx.Response) -> None:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["param"] == "Idempotency-Key"
        assert "different request body" in error["message"]

    async def _assert_one_turn(
        self, http: httpx.AsyncClient, tenant: TenantFixture, headers: dict[str, str], url: str
    ) -> None:
        listed = (await http.get(url, headers=headers)).json()["data"]
        assert [m["role"] for m in listed] == ["user", "assistant"]
        thread = (await http.get(url.removesuffix("/messages"), headers=headers)).json()
        assert thread["message_count"] == 2
        assert len(await logs_when_settled(http, tenant, 1)) == 1  # no second usage event

    async def test_another_content_is_refused_without_a_call(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ):
        http = upstream_client
        tenant, headers, url = await self._setup(http)
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        first = await http.post(url, json={"model": "gpt-4o-mini", "content": "one"}, headers=keyed)
        assert first.status_code == 200, first.text
        assert len(upstream.seen) == 1
        replay = await http.post(
            url, json={"model": "gpt-4o-mini", "content": "one"}, headers=keyed
        )
        assert replay.status_code == 200, replay.text
        assert replay.json() == first.json()
        other = await http.post(url, json={"model": "gpt-4o-mini", "content": "two"}, headers=keyed)
        self._assert_refused(other)
        assert len(upstream.seen) == 1
        await self._assert_one_turn(http, tenant, headers, url)

    async def test_another_model_is_refused(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ):
        http = upstream_client
        tenant, headers, url = await self._setup(http)
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        first = await http.post(url, json={"model": "gpt-4o-mini", "content": "hi"}, headers=keyed)
        assert first.status_code == 200, first.text
        other = await http.post(
            url, json={"model": "deepseek-chat", "content": "hi"}, headers=keyed
        )
        self._assert_refused(other)
        assert len(upstream.seen) == 1
        await self._assert_one_turn(http, tenant, headers, url)

    async def test_the_turn_that_waited_on_the_lock_is_checked_too(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ):
        http = upstream_client
        tenant, headers, url = await self._setup(http)
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        responses = await asyncio.gather(
            *(
                http.post(url, json={"model": "gpt-4o-mini", "content": said}, headers=keyed)
                for said in ("one", "two")
            )
        )
        assert sorted(r.status_code for r in responses) == [200, 400], [r.text for r in responses]
        self._assert_refused(next(r for r in responses if r.status_code == 400))
        assert len(upstream.seen) == 1
        await self._assert_one_turn(http, tenant, headers, url)

    async def test_the_same_request_spelt_differently_replays(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ):
        http = upstream_client
        tenant, headers, url = await self._setup(http)
        keyed = {**headers, "Idempotency-Key": "turn-1", "Content-Type": "application/json"}
        compact = '{"model":"gpt-4o-mini","content":"hi","temperature":1}'
        # Other spacing and key order, a float spelt otherwise, a default written out.
        spelt = json.dumps(
            {"max_tool_rounds": 8, "temperature": 1.0, "content": "hi", "model": "gpt-4o-mini"},
            indent=4,
        )
        first = await http.post(url, content=compact, headers=keyed)
        assert first.status_code == 200, first.text
        again = await http.post(url, content=spelt, headers=keyed)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert len(upstream.seen) == 1
        await self._assert_one_turn(http, tenant, headers, url)

    async def test_a_stream_with_a_reused_key_is_a_json_400(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ):
        http = upstream_client
        tenant, headers, url = await self._setup(http)
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        body = {"model": "gpt-4o-mini", "content": "one", "stream": True}
        first = await http.post(url, json=body, headers=keyed)
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("text/event-stream")
        assert "thread.message.completed" in first.text
        replay = await http.post(url, json=body, headers=keyed)
        assert replay.status_code == 200, replay.text
        assert "thread.message.completed" in replay.text
        other = await http.post(url, json={**body, "content": "two"}, headers=keyed)
        self._assert_refused(other)
        assert len(upstream.seen) == 1
        await self._assert_one_turn(http, tenant, headers, url)

    async def test_a_turn_stored_before_the_hash_replays_as_before(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(client)
        headers = bearer((await create_key(client, tenant, test=True))["secret"])
        thread = await _thread(client, headers)
        url = f"/v1/threads/{thread['id']}/messages"
        keyed = {**headers, "Idempotency-Key": "turn-1"}
        first = await client.post(
            url, json={"model": "gpt-4o-mini", "content": "one"}, headers=keyed
        )
        assert first.status_code == 200, first.text
        async with engine.begin() as connection:
            await connection.execute(sa.text("UPDATE thread_messages SET request_hash = NULL"))
        again = await client.post(
            url, json={"model": "gpt-4o-mini", "content": "two"}, headers=keyed
        )
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]


class TestTurnsUpstream:
    async def test_a_cap_above_the_models_maximum_is_lowered_to_it(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        headers = bearer((await create_key(http, tenant))["secret"])
        thread = await _thread(http, headers)
        response = await http.post(
            f"/v1/threads/{thread['id']}/messages",
            json={"model": "gpt-4o", "content": "Hi", "max_tokens": 100_000},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body["max_completion_tokens"] == 16_384  # gpt-4o's maximum
