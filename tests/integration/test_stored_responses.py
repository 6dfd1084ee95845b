"""Stored Responses (`store`, `previous_response_id`, `item_reference`, GET/DELETE
/v1/responses/{id}, input_items) on each of the four providers, through a real server with the
fake upstreams: the upstream gets the whole history each time, nothing of it reaches OpenAI's
own store, and another key or tenant gets a 404 with nothing sent upstream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.upstream import FakeUpstream

MODELS = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4",
    "gemini": "gemini-2.5-flash",
    "deepseek": "deepseek-chat",
}


@pytest.fixture
def sent(upstream: FakeUpstream, claude: FakeAnthropic, gemini: FakeGemini) -> Any:
    """What each provider's fake received: the request bodies, in order."""
    upstream.fresh_response_ids = True

    def bodies(provider: str) -> list[dict[str, Any]]:
        if provider == "anthropic":
            return [s.body for s in claude.seen]
        if provider == "gemini":
            return [s.body for s in gemini.seen]
        deepseek = provider == "deepseek"
        return [s.body for s in upstream.seen if s.path.startswith("/deepseek") == deepseek]

    return bodies


async def _user(http: httpx.AsyncClient) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant)
    return tenant, bearer(key["secret"])


async def _respond(http: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await http.post("/v1/responses", json=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize("provider", list(MODELS))
class TestChains:
    async def test_three_turns_send_the_whole_history_and_store_each_once(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        tenant, headers = await _user(every_http)
        model = MODELS[provider]
        first = await _respond(every_http, headers, model=model, input="Remember the word ALPACA.")
        second = await _respond(every_http, headers, model=model, input="And the word BISON.",
                                previous_response_id=first["id"])  # fmt: skip
        third = await _respond(every_http, headers, model=model, input="Which words?",
                               previous_response_id=second["id"])  # fmt: skip
        assert len({first["id"], second["id"], third["id"]}) == 3
        assert third["previous_response_id"] == second["id"]  # as the client chained it
        assert third["store"] is True
        bodies = sent(provider)
        assert len(bodies) == 3
        last = json.dumps(bodies[-1], ensure_ascii=False)
        for said in ("ALPACA", "BISON", "Which words?"):
            assert said in last, (said, last)
        assert "previous_response_id" not in bodies[-1]
        if provider == "openai":  # nothing kept at OpenAI: Tollgate stores it
            assert all(body["store"] is False for body in bodies)
            assert "reasoning.encrypted_content" in bodies[-1]["include"]
        # The earlier answers are part of the history too.
        answered = [i for i in first["output"] if i.get("type") == "message"]
        for item in answered:
            for part in item["content"]:
                if part.get("text"):
                    assert part["text"][:20] in last
        stored = await every_http.get(f"/v1/responses/{second['id']}", headers=headers)
        assert stored.status_code == 200
        assert stored.json()["id"] == second["id"]
        assert stored.json()["output"] == second["output"]
        items = (await every_http.get(f"/v1/responses/{second['id']}/input_items",
                                      headers=headers)).json()  # fmt: skip
        assert [i["type"] for i in items["data"]] == ["message"]
        assert "BISON" in json.dumps(items["data"])
        assert items["data"][0]["id"]
        logs = await logs_when_settled(every_http, tenant, 3)
        assert len(logs) == 3
        deleted = await every_http.delete(f"/v1/responses/{first['id']}", headers=headers)
        assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
        assert (
            await every_http.get(f"/v1/responses/{first['id']}", headers=headers)
        ).status_code == 404
        gone = await every_http.post("/v1/responses", headers=headers, json={
            "model": model, "input": "again", "previous_response_id": first["id"]})  # fmt: skip
        assert gone.status_code == 404
        assert gone.json()["error"]["param"] == "previous_response_id"
        assert len(sent(provider)) == 3  # nothing went upstream

    async def test_an_item_reference_is_sent_as_the_stored_item(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        _, headers = await _user(every_http)
        model = MODELS[provider]
        first = await _respond(every_http, headers, model=model, input="The code is 4471.")
        items = (await every_http.get(f"/v1/responses/{first['id']}/input_items",
                                      headers=headers)).json()["data"]  # fmt: skip
        referenced = items[0]["id"]
        await _respond(every_http, headers, model=model, input=[
            {"type": "item_reference", "id": referenced},
            {"role": "user", "content": "What was the code?"},
        ])  # fmt: skip
        last = json.dumps(sent(provider)[-1])
        assert "4471" in last
        assert "item_reference" not in last
        assert "What was the code?" in last

    async def test_store_false_keeps_nothing(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        _, headers = await _user(every_http)
        answer = await _respond(every_http, headers, model=MODELS[provider], input="Hi",
                                store=False)  # fmt: skip
        found = await every_http.get(f"/v1/responses/{answer['id']}", headers=headers)
        assert found.status_code == 404


class TestStreams:
    @pytest.mark.parametrize("provider", list(MODELS))
    async def test_a_streamed_response_is_stored_before_its_last_event(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        _, headers = await _user(every_http)
        model = MODELS[provider]
        final: dict[str, Any] = {}
        async with every_http.stream("POST", "/v1/responses", headers=headers, json={
            "model": model, "input": "Remember GNU.", "stream": True,
        }) as response:  # fmt: skip
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"response.completed"' in line:
                    final = json.loads(line[6:])["response"]
        assert final["id"]
        stored = (await every_http.get(f"/v1/responses/{final['id']}", headers=headers)).json()
        assert stored["id"] == final["id"]
        await _respond(every_http, headers, model=model, input="Which animal?",
                       previous_response_id=final["id"])  # fmt: skip
        assert "GNU" in json.dumps(sent(provider)[-1])


class TestIsolation:
    async def test_another_keys_or_tenants_response_and_items_are_404(
        self, every_http: httpx.AsyncClient, sent: Any
    ):
        tenant = await create_tenant(every_http)
        alice = bearer((await create_key(every_http, tenant))["secret"])
        bob = bearer((await create_key(every_http, tenant))["secret"])
        other_tenant, eve = await _user(every_http)
        mine = await _respond(every_http, alice, model="claude-sonnet-4", input="secret 9912")
        item_id = (await every_http.get(f"/v1/responses/{mine['id']}/input_items",
                                        headers=alice)).json()["data"][0]["id"]  # fmt: skip
        before = len(sent("anthropic"))
        for headers in (bob, eve, other_tenant.headers):
            assert (
                await every_http.get(f"/v1/responses/{mine['id']}", headers=headers)
            ).status_code == 404
            assert (await every_http.get(f"/v1/responses/{mine['id']}/input_items",
                                         headers=headers)).status_code == 404  # fmt: skip
            assert (
                await every_http.delete(f"/v1/responses/{mine['id']}", headers=headers)
            ).status_code == 404
            chain = {"model": "claude-sonnet-4", "input": "go", "previous_response_id": mine["id"]}
            chained = await every_http.post("/v1/responses", headers=headers, json=chain)
            assert chained.status_code == 404
            referenced = await every_http.post("/v1/responses", headers=headers, json={
                "model": "claude-sonnet-4",
                "input": [{"type": "item_reference", "id": item_id}]})  # fmt: skip
            assert referenced.status_code == 404
            assert referenced.json()["error"]["param"] == "input[0].id"
        assert len(sent("anthropic")) == before
        # The tenant's master key sees its keys' responses.
        assert (
            await every_http.get(f"/v1/responses/{mine['id']}", headers=tenant.headers)
        ).status_code == 200

    async def test_bad_references_are_named(self, every_http: httpx.AsyncClient):
        _, headers = await _user(every_http)
        for body, param in [
            ({"previous_response_id": 7}, "previous_response_id"),
            ({"previous_response_id": "resp_nope"}, "previous_response_id"),
            ({"input": [{"type": "item_reference"}]}, "input[0].id"),
            ({"conversation": "conv_1"}, "conversation"),
        ]:
            sent_body = {"model": "gpt-4o", "input": "x", **body}
            response = await every_http.post("/v1/responses", headers=headers, json=sent_body)
            assert response.status_code in (400, 404), response.text
            assert response.json()["error"]["param"] == param


@pytest.mark.postgres
async def test_retention_hides_and_then_deletes_expired_responses(
    every_http: httpx.AsyncClient, postgres_url: str, database_url: str
):
    if not database_url.startswith("postgresql"):
        pytest.skip("checked once, on PostgreSQL")
    _, headers = await _user(every_http)
    answer = await _respond(every_http, headers, model="gpt-4o", input="Hi")
    engine = sa.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE stored_responses SET expires_at = now() - interval '1 second'"
        ))  # fmt: skip
    engine.dispose()
    assert (
        await every_http.get(f"/v1/responses/{answer['id']}", headers=headers)
    ).status_code == 404


class TestConversations:
    @pytest.mark.parametrize("provider", ["openai", "anthropic"])
    async def test_responses_read_and_add_to_a_conversation(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        _, headers = await _user(every_http)
        model = MODELS[provider]
        created = await every_http.post("/v1/conversations", headers=headers, json={
            "metadata": {"topic": "zoo"},
            "items": [{"type": "message", "role": "user", "content": "My pet is a QUOKKA."}],
        })  # fmt: skip
        assert created.status_code == 200, created.text
        conversation = created.json()
        assert conversation["object"] == "conversation"
        assert conversation["id"].startswith("conv_")
        assert conversation["metadata"] == {"topic": "zoo"}
        await _respond(every_http, headers, model=model, input="Say hi.",
                       conversation=conversation["id"])  # fmt: skip
        await _respond(every_http, headers, model=model, input="Which pet?",
                       conversation={"id": conversation["id"]}, store=False)  # fmt: skip
        last = json.dumps(sent(provider)[-1], ensure_ascii=False)
        assert "QUOKKA" in last
        assert "Say hi." in last
        assert "conversation" not in sent(provider)[-1]
        items = (await every_http.get(f"/v1/conversations/{conversation['id']}/items",
                                      params={"order": "asc"}, headers=headers)).json()  # fmt: skip
        kinds = [(i["type"], i.get("role")) for i in items["data"]]
        assert kinds[:2] == [("message", "user"), ("message", "user")]
        assert ("message", "assistant") in kinds
        assert "Which pet?" in json.dumps(items["data"])  # added although store was false
        first = items["data"][0]
        one = await every_http.get(
            f"/v1/conversations/{conversation['id']}/items/{first['id']}", headers=headers
        )
        assert one.json() == first
        added = await every_http.post(
            f"/v1/conversations/{conversation['id']}/items", headers=headers,
            json={"items": [{"type": "message", "role": "user", "content": "Also a GOAT."}]},
        )  # fmt: skip
        assert added.status_code == 200
        assert added.json()["data"][0]["id"]
        removed = await every_http.delete(
            f"/v1/conversations/{conversation['id']}/items/{first['id']}", headers=headers
        )
        assert removed.json()["id"] == conversation["id"]
        await _respond(every_http, headers, model=model, input="Pets?",
                       conversation=conversation["id"])  # fmt: skip
        last = json.dumps(sent(provider)[-1], ensure_ascii=False)
        listed = (await every_http.get(f"/v1/conversations/{conversation['id']}/items",
                                       headers=headers)).json()  # fmt: skip
        assert first["id"] not in [i["id"] for i in listed["data"]]
        if provider == "openai":  # (the Claude fake's answers echo what they were told)
            assert "QUOKKA" not in last
        assert "GOAT" in last
        farm = {"metadata": {"topic": "farm"}}
        renamed = await every_http.post(
            f"/v1/conversations/{conversation['id']}", headers=headers, json=farm
        )
        assert renamed.json()["metadata"] == {"topic": "farm"}
        deleted = await every_http.delete(f"/v1/conversations/{conversation['id']}",
                                          headers=headers)  # fmt: skip
        assert deleted.json() == {"id": conversation["id"], "object": "conversation.deleted",
                                  "deleted": True}  # fmt: skip
        gone = await every_http.post("/v1/responses", headers=headers, json={
            "model": model, "input": "x", "conversation": conversation["id"]})  # fmt: skip
        assert gone.status_code == 404
        assert gone.json()["error"]["param"] == "conversation"

    async def test_another_keys_or_tenants_conversation_is_404(
        self, every_http: httpx.AsyncClient, sent: Any
    ):
        tenant = await create_tenant(every_http)
        alice = bearer((await create_key(every_http, tenant))["secret"])
        bob = bearer((await create_key(every_http, tenant))["secret"])
        other_tenant, eve = await _user(every_http)
        said = [{"type": "message", "role": "user", "content": "private 5521"}]
        conversation = (
            await every_http.post("/v1/conversations", headers=alice, json={"items": said})
        ).json()
        conv = conversation["id"]
        item_id = (await every_http.get(f"/v1/conversations/{conv}/items",
                                        headers=alice)).json()["data"][0]["id"]  # fmt: skip
        before = len(sent("openai"))
        for headers in (bob, eve, other_tenant.headers):
            for method, path in [("GET", f"/v1/conversations/{conv}"),
                                 ("DELETE", f"/v1/conversations/{conv}"),
                                 ("GET", f"/v1/conversations/{conv}/items"),
                                 ("GET", f"/v1/conversations/{conv}/items/{item_id}")]:  # fmt: skip
                response = await every_http.request(method, path, headers=headers)
                assert response.status_code == 404, (method, path)
            used = await every_http.post("/v1/responses", headers=headers, json={
                "model": "gpt-4o", "input": "x", "conversation": conv})  # fmt: skip
            assert used.status_code == 404
            reference = [{"type": "item_reference", "id": item_id}]
            referenced = await every_http.post(
                "/v1/responses", headers=headers, json={"model": "gpt-4o", "input": reference}
            )
            assert referenced.status_code == 404
        assert len(sent("openai")) == before
        assert (
            await every_http.get(f"/v1/conversations/{conv}", headers=tenant.headers)
        ).status_code == 200

    async def test_bad_conversation_requests_are_named(self, every_http: httpx.AsyncClient):
        _, headers = await _user(every_http)
        conv = (await every_http.post("/v1/conversations", headers=headers, json={})).json()["id"]
        for path, body, param in [
            ("/v1/conversations", {"items": "x"}, "items"),
            ("/v1/conversations", {"items": [{"type": "item_reference", "id": "a"}]}, "items[0]"),
            ("/v1/conversations", {"metadata": {"k": 1}}, "metadata"),
            (f"/v1/conversations/{conv}/items", {"items": []}, "items"),
            ("/v1/responses", {"model": "gpt-4o", "input": "x", "conversation": conv,
                               "previous_response_id": "resp_1"}, "conversation"),
            ("/v1/responses", {"model": "gpt-4o", "input": "x", "conversation": 5}, "conversation"),
        ]:  # fmt: skip
            response = await every_http.post(path, headers=headers, json=body)
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["param"] == param


class TestBackground:
    async def _polled(
        self, http: httpx.AsyncClient, headers: dict[str, str], response_id: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for _ in range(300):
            body = (await http.get(f"/v1/responses/{response_id}", headers=headers)).json()
            if body["status"] not in ("queued", "in_progress"):
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"the background response never finished: {body}")

    @pytest.mark.parametrize("provider", ["openai", "anthropic"])
    async def test_a_background_response_is_made_by_a_job_and_polled(
        self, every_http: httpx.AsyncClient, sent: Any, provider: str
    ):
        tenant, headers = await _user(every_http)
        queued = await _respond(every_http, headers, model=MODELS[provider], input="Later: OKAPI.",
                                background=True)  # fmt: skip
        assert queued["status"] == "queued"
        assert queued["background"] is True
        assert queued["id"].startswith("resp_")
        done = await self._polled(every_http, headers, queued["id"])
        assert done["status"] == "completed", done
        assert done["id"] == queued["id"]
        assert done["output"]
        assert len(sent(provider)) == 1
        assert "background" not in sent(provider)[0]
        (entry,) = await logs_when_settled(every_http, tenant, 1)
        assert entry["status"] == 200
        assert entry["cost_micros"] > 0
        follow = await _respond(every_http, headers, model=MODELS[provider], input="What, later?",
                                previous_response_id=queued["id"])  # fmt: skip
        assert follow["status"] == "completed"
        assert "OKAPI" in json.dumps(sent(provider)[-1])

    async def test_a_background_response_refused_for_budget_ends_failed(
        self, every_http: httpx.AsyncClient, sent: Any
    ):
        tenant = await create_tenant(every_http)
        key = await create_key(every_http, tenant, max_spend_usd=0.000001)
        headers = bearer(key["secret"])
        queued = await _respond(every_http, headers, model="gpt-4o", input="Hi", background=True)
        done = await self._polled(every_http, headers, queued["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "budget_exceeded"
        assert sent("openai") == []

    async def test_background_needs_store_and_no_stream(self, every_http: httpx.AsyncClient):
        _, headers = await _user(every_http)
        for extra, param in [({"store": False}, "store"), ({"stream": True}, "stream"),
                             ({"input": []}, "input")]:  # fmt: skip
            body = {"model": "gpt-4o", "input": "Hi", "background": True, **extra}
            response = await every_http.post("/v1/responses", headers=headers, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param
