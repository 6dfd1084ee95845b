"""Tenants' own provider keys (BYOK, SPEC §5.9): validated on save, sealed at rest, preferred
over the operator's account, and only the tenant's."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.kit.crypto import SecretBox
from tests.conftest import SECRET_KEY
from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.fakes.upstream import FakeUpstream

OWN_KEY = "sk-tenant-own-key-1234"


async def _chat(http: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers=bearer(secret),
    )


async def _store(
    http: httpx.AsyncClient, tenant: TenantFixture, upstream: FakeUpstream, key: str = OWN_KEY,
    **fields: object,
) -> httpx.Response:  # fmt: skip
    body = {"api_key": key, "base_url": upstream.openai_base_url, "enabled": True, **fields}
    return await http.put("/v1/providers/openai", json=body, headers=tenant.headers)


class TestByok:
    async def test_a_tenants_requests_use_its_own_key_and_no_one_elses(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        own, other = await create_tenant(http, "own"), await create_tenant(http, "other")
        stored = await _store(http, own, upstream)
        assert stored.status_code == 200, stored.text
        shown = stored.json()
        assert shown["name"] == "openai"
        assert shown["key_last4"] == "1234"
        assert shown["enabled"] is True
        assert shown["validated_at"]
        assert OWN_KEY not in stored.text
        mine, theirs = await create_key(http, own), await create_key(http, other)
        assert (await _chat(http, mine["secret"])).status_code == 200
        assert (await _chat(http, theirs["secret"])).status_code == 200
        assert upstream.keys_seen()[-2:] == [OWN_KEY, "sk-operator-openai"]
        listed = (await http.get("/v1/providers", headers=own.headers)).json()
        assert [p["name"] for p in listed["data"]] == ["openai"]
        assert OWN_KEY not in str(listed)
        assert (await http.get("/v1/providers", headers=other.headers)).json()["data"] == []
        assert (await http.get("/v1/providers/openai", headers=other.headers)).status_code == 404

    async def test_the_stored_key_is_sealed(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        assert (await _store(http, tenant, upstream)).status_code == 200
        async with engine.connect() as connection:
            sealed = (
                await connection.execute(text("SELECT api_key FROM provider_credentials"))
            ).scalar_one()
        assert OWN_KEY not in sealed
        assert SecretBox(SECRET_KEY).open(sealed) == OWN_KEY
        with pytest.raises(ValueError, match="cannot be decrypted"):
            SecretBox("another-secret-key-" + "x" * 32).open(sealed)

    async def test_a_wrong_key_is_rejected_with_the_upstreams_message(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        upstream.rejected_keys.add("sk-wrong-key-0000")
        response = await _store(http, tenant, upstream, key="sk-wrong-key-0000")
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == "api_key"
        assert "Incorrect API key provided" in error["message"]
        assert (await http.get("/v1/providers", headers=tenant.headers)).json()["data"] == []

    async def test_disabled_or_deleted_keys_fall_back_to_the_operator(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        await _store(http, tenant, upstream)
        await _chat(http, key["secret"])
        assert (await _store(http, tenant, upstream, enabled=False)).json()["enabled"] is False
        await _chat(http, key["secret"])
        await _store(http, tenant, upstream)
        await _chat(http, key["secret"])
        deleted = await http.delete("/v1/providers/openai", headers=tenant.headers)
        assert deleted.json() == {"object": "provider", "name": "openai", "deleted": True}
        await _chat(http, key["secret"])
        assert upstream.keys_seen() == [OWN_KEY, "sk-operator-openai", OWN_KEY,
                                        "sk-operator-openai"]  # fmt: skip
        again = await http.delete("/v1/providers/openai", headers=tenant.headers)
        assert again.status_code == 404

    async def test_master_key_only_and_known_providers_only(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        user = await create_key(http, tenant)
        body = {"api_key": OWN_KEY, "enabled": True}
        denied = await http.put("/v1/providers/openai", json=body, headers=bearer(user["secret"]))
        assert denied.status_code == 403
        unknown = await http.put("/v1/providers/mistral", json=body, headers=tenant.headers)
        assert unknown.status_code in (400, 404)
        assert not upstream.seen


class TestByokBaseUrl:
    @pytest.mark.parametrize(
        "base_url",
        [
            "http://api.example.com/v1",  # private addresses are not allowed: https only
            "https://user:secret@api.example.com/v1",
            "https://api.example.com/v1?api-version=1",
            "https://api.example.com/v1#models",
            "https://api.example.com:99999/v1",
        ],
    )
    async def test_refused_base_urls_are_a_400_naming_the_field(
        self, client: httpx.AsyncClient, base_url: str
    ):
        tenant = await create_tenant(client)
        body = {"api_key": OWN_KEY, "base_url": base_url}
        response = await client.put("/v1/providers/openai", json=body, headers=tenant.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "base_url"
        assert (await client.get("/v1/providers", headers=tenant.headers)).json()["data"] == []


class TestByokOnlyProvider:
    async def test_a_provider_the_operator_lacks_is_served_with_the_tenants_key(
        self, settings, upstream: FakeUpstream
    ):
        from tests.conftest import app_client

        bare = settings.model_copy(update={"allow_private_webhooks": True})
        async with app_client(bare) as http:
            tenant = await create_tenant(http)
            key = await create_key(http, tenant)
            body = {"model": "deepseek-chat", "messages": HELLO}
            refused = await http.post("/v1/chat/completions", json=body,
                                      headers=bearer(key["secret"]))  # fmt: skip
            assert refused.json()["error"]["code"] == "provider_not_configured"
            stored = await http.put(
                "/v1/providers/deepseek",
                json={"api_key": OWN_KEY, "base_url": upstream.deepseek_base_url},
                headers=tenant.headers,
            )
            assert stored.status_code == 200, stored.text
            models = (await http.get("/v1/models", headers=bearer(key["secret"]))).json()
            assert "deepseek-chat" in [m["id"] for m in models["data"]]
            answer = await http.post("/v1/chat/completions", json=body,
                                     headers=bearer(key["secret"]))  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.json()["provider"] == "deepseek"
            assert upstream.keys_seen() == [OWN_KEY]


class TestAcrossProcesses:
    async def test_a_saved_key_reaches_every_api_process_at_once(
        self, gateway_settings, upstream: FakeUpstream
    ):
        import asyncio

        from api.app import create_app
        from tests.fakes.server import serve_in_thread

        if gateway_settings.redis_url is None:
            pytest.skip("processes share changes through Redis")
        with (
            serve_in_thread(create_app(gateway_settings)) as one,
            serve_in_thread(create_app(gateway_settings)) as two,
        ):
            async with (
                httpx.AsyncClient(base_url=one) as first,
                httpx.AsyncClient(base_url=two) as second,
            ):
                tenant = await create_tenant(first)
                key = await create_key(first, tenant)
                await _chat(second, key["secret"])  # process two caches "no key of its own"
                assert (await _store(first, tenant, upstream)).status_code == 200
                for _ in range(50):
                    await _chat(second, key["secret"])
                    if upstream.keys_seen()[-1] == OWN_KEY:
                        break
                    await asyncio.sleep(0.02)
                assert upstream.keys_seen()[0] == "sk-operator-openai"
                assert upstream.keys_seen()[-1] == OWN_KEY
                assert len(upstream.seen) < 10  # well before the 30 s cache would expire


class TestByokAnthropic:
    async def test_messages_and_count_tokens_use_the_tenants_key(
        self, every_http: httpx.AsyncClient, claude
    ):
        tenant = await create_tenant(every_http)
        key = await create_key(every_http, tenant)
        body = {"api_key": "sk-ant-tenant-own", "base_url": claude.base_url}
        claude.api_key = "sk-ant-tenant-own"  # from now on only the tenant's key is accepted
        wrong = await every_http.put(
            "/v1/providers/anthropic", json={**body, "api_key": "sk-ant-wrong-key"},
            headers=tenant.headers,
        )  # fmt: skip
        assert wrong.status_code == 400
        assert "invalid x-api-key" in wrong.json()["error"]["message"]
        stored = await every_http.put("/v1/providers/anthropic", json=body, headers=tenant.headers)
        assert stored.status_code == 200, stored.text
        ask = {"model": "claude-sonnet-4", "max_tokens": 20, "messages": HELLO}
        answer = await every_http.post("/v1/messages", json=ask, headers=bearer(key["secret"]))
        assert answer.status_code == 200, answer.text
        count = {"model": "claude-sonnet-4", "messages": HELLO}
        counted = await every_http.post(
            "/v1/messages/count_tokens", json=count, headers=bearer(key["secret"])
        )
        assert counted.status_code == 200, counted.text
        assert counted.headers["x-tollgate-token-count"] == "exact"
        assert {s.headers.get("x-api-key") for s in claude.seen} == {"sk-ant-tenant-own"}
