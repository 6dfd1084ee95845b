"""Key changes reach the proxy's cached path at once, in this process and in others."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.background import Background
from api.settings import Settings
from api.usage.models import UsageEvent
from tests.conftest import app_client
from tests.factories.chat import HELLO
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.fakes.server import serve_in_thread


async def _chat(http: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}, headers=bearer(secret)
    )


class TestCachedKeys:
    async def test_revoke_rotate_and_patch_apply_to_the_next_request(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, test=True)
        assert (await _chat(http, key["secret"])).status_code == 200  # now cached
        patched = await http.patch(
            f"/v1/keys/{key['id']}",
            json={"allowed_models": ["gpt-4o-mini"]},
            headers=tenant.headers,
        )
        assert patched.status_code == 200
        assert (await _chat(http, key["secret"])).status_code == 403
        rotated = (await http.post(f"/v1/keys/{key['id']}/rotate", headers=tenant.headers)).json()
        assert (await _chat(http, key["secret"])).status_code == 401
        await http.patch(
            f"/v1/keys/{key['id']}", json={"allowed_models": None}, headers=tenant.headers
        )
        assert (await _chat(http, rotated["secret"])).status_code == 200
        await http.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert (await _chat(http, rotated["secret"])).status_code == 401

    # Several API processes share one database only with Redis: PostgreSQL + Redis alone.
    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    async def test_revocation_reaches_another_api_process(self, gateway_settings: Settings):
        assert gateway_settings.redis_url is not None
        with (
            serve_in_thread(create_app(gateway_settings)) as url_a,
            serve_in_thread(create_app(gateway_settings)) as url_b,
        ):
            async with (
                httpx.AsyncClient(base_url=url_a) as a,
                httpx.AsyncClient(base_url=url_b) as b,
            ):
                tenant = await create_tenant(a)
                key = await create_key(a, tenant, test=True)
                assert (await _chat(b, key["secret"])).status_code == 200  # cached in B
                await a.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
                for _ in range(50):
                    if (await _chat(b, key["secret"])).status_code == 401:
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise AssertionError("process B still accepts a key revoked through A")

    async def test_lowering_a_cap_applies_at_once(
        self, http: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=5)
        await http.patch(f"/v1/keys/{key['id']}", json={"max_spend_usd": 0}, headers=tenant.headers)
        response = await _chat(http, key["secret"])
        assert response.status_code == 402


class TestShutdown:
    async def test_clean_shutdown_writes_every_usage_event(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with app_client(settings) as client:
            tenant = await create_tenant(client)
            key = await create_key(client, tenant, test=True)
            results = await asyncio.gather(*(_chat(client, key["secret"]) for _ in range(25)))
            assert all(r.status_code == 200 for r in results)
        # The lifespan has ended: nothing waits in memory any more.
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count())
                .select_from(UsageEvent)
                .where(UsageEvent.key_id == uuid.UUID(key["id"]))
            )
        assert count == 25

    async def test_a_cancelled_shutdown_still_stops_every_background_task(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ):
        # A host that stops waiting for shutdown cancels the lifespan in the middle of a step:
        # the steps after it must run anyway.
        close = Background.close

        async def slow(background: Background) -> None:
            await close(background)
            await asyncio.sleep(30)

        monkeypatch.setattr(Background, "close", slow)
        app = create_app(settings)
        manager = LifespanManager(app, shutdown_timeout=0.5)
        with pytest.raises(TimeoutError):
            async with manager:
                assert _background_tasks(), "the app runs its background tasks"
        assert _background_tasks() == []

    async def test_a_failing_shutdown_step_does_not_skip_the_rest(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ):
        close = Background.close

        async def fails(background: Background) -> None:
            await close(background)
            raise RuntimeError("close failed after closing")

        monkeypatch.setattr(Background, "close", fails)
        async with app_client(settings) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert _background_tasks()
        assert _background_tasks() == []


_TASKS = {"key-cache", "routing", "usage-writer", "ledger-drain"}


def _background_tasks() -> list[str]:
    names = (task.get_name() for task in asyncio.all_tasks() if not task.done())
    return sorted(name for name in names if name in _TASKS)
