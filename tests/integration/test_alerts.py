"""Budget alerts: 50/80/100 % of a limit, once per limit and period, signed, retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.alert.models import Alert
from api.alert.service import MAX_ATTEMPTS, AlertNotifier, Crossing
from api.app import create_app
from api.auth.limits import Limit
from api.db import create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.settings import Settings
from tests.conftest import SECRET_KEY, app_client
from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream, billed_prompt_tokens

MINI = ("0.15", "0.075", "0.60")


def _verify(headers: dict[str, str], body: bytes, secret: str) -> None:
    """What a receiver does (SPEC §5.5): recompute the HMAC, reject stale timestamps."""
    parts = dict(item.split("=", 1) for item in headers["X-Tollgate-Signature"].split(","))
    timestamp = int(parts["t"])
    assert abs(time.time() - timestamp) < 300
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(parts["v1"], expected.hexdigest())


async def _configure(http: httpx.AsyncClient, tenant: TenantFixture, url: str) -> str:
    put = await http.put(
        "/v1/settings", json={"alerts": {"webhook_url": url}}, headers=tenant.headers
    )
    assert put.status_code == 200, put.text
    created = await http.post("/v1/settings/webhook-secret", headers=tenant.headers)
    assert created.status_code == 200
    secret: str = created.json()["secret"]
    settings = (await http.get("/v1/settings", headers=tenant.headers)).json()
    assert settings["alerts"] == {"webhook_url": url, "emails": [], "signing_secret_set": True}
    assert secret not in json.dumps(settings)
    return secret


async def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


class TestBudgetAlerts:
    async def test_each_threshold_fires_once_signed(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 20
        one = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 20, MINI)
        tenant = await create_tenant(http)
        secret = await _configure(http, tenant, upstream.hooks_url)
        key = await create_key(http, tenant, max_spend_usd=10 * one / 1_000_000)
        statuses = []
        for _ in range(14):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 20},
                headers=bearer(key["secret"]),
            )
            statuses.append(response.status_code)
            await asyncio.sleep(0.02)  # let each settlement land before the next request
        assert statuses.count(200) >= 9
        assert statuses[-1] == 402  # exhausted: the 100 % alert fires even if usage stops short
        await _wait_for(lambda: len(upstream.hooks) >= 3)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert len(upstream.hooks) == 3
        bodies = [json.loads(body) for _, body in upstream.hooks]
        for headers, body in upstream.hooks:
            _verify(headers, body, secret)
        assert sorted(b["threshold"] for b in bodies) == [50, 80, 100]
        assert {(b["scope"], b["key_id"], b["metric"], b["period"]) for b in bodies} == {
            ("key", key["id"], "spend_usd", "month")
        }
        for b in bodies:
            if b["threshold"] < 100:
                assert b["used_micros"] >= b["max_micros"] * b["threshold"] // 100
            else:  # refused for want of budget: at most one request's worst case is left
                assert b["max_micros"] - b["used_micros"] < 2 * one
        listed = (await http.get("/v1/alerts", headers=tenant.headers)).json()["data"]
        assert len(listed) == 3
        assert all(a["delivered_at"] and a["attempts"] == 1 for a in listed)

    async def test_failed_delivery_is_retried(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 20
        upstream.hook_failures = 1
        tenant = await create_tenant(http)
        secret = await _configure(http, tenant, upstream.hooks_url)
        limit = {"metric": "requests", "period": "day", "max": 2}
        await http.put("/v1/settings", json={"limits": [limit]}, headers=tenant.headers)
        key = await create_key(http, tenant)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5},
            headers=bearer(key["secret"]),
        )
        assert response.status_code == 200
        await _wait_for(lambda: len(upstream.hooks) == 1)
        headers, body = upstream.hooks[0]
        _verify(headers, body, secret)
        sent = json.loads(body)
        assert (sent["scope"], sent["key_id"], sent["threshold"]) == ("tenant", None, 50)
        listed: list[dict[str, Any]] = []
        for _ in range(100):  # the outcome is stored right after the receiver answers
            listed = (await http.get("/v1/alerts", headers=tenant.headers)).json()["data"]
            if listed[0]["delivered_at"] is not None:
                break
            await asyncio.sleep(0.05)
        assert listed[0]["attempts"] == 2
        assert listed[0]["delivered_at"] is not None

    async def test_private_and_odd_urls_are_refused(self, settings: Settings):
        strict = settings.model_copy(update={"allow_private_webhooks": False})
        async with app_client(strict) as client:
            tenant = await create_tenant(client)
            for url in ("http://127.0.0.1:9/hook", "http://10.0.0.8/h", "ftp://example.com/h"):
                response = await client.put(
                    "/v1/settings", json={"alerts": {"webhook_url": url}}, headers=tenant.headers
                )
                assert response.status_code == 400, url
                assert response.json()["error"]["param"] == "alerts.webhook_url"

    async def test_alerts_are_the_tenants_own(self, gateway_settings: Settings):
        with serve_in_thread(create_app(gateway_settings)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                alpha = await create_tenant(client, "alpha")
                beta = await create_tenant(client, "beta")
                user = await create_key(client, alpha)
                assert (await client.get("/v1/alerts", headers=beta.headers)).json()["data"] == []
                forbidden = await client.get("/v1/alerts", headers=bearer(user["secret"]))
                assert forbidden.status_code == 403


class TestResendSweep:
    async def test_undelivered_alerts_are_resent_until_delivered(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        secret = await _configure(http, tenant, upstream.hooks_url)
        now = utcnow()

        def alert(threshold: int, created_at: datetime, attempts: int) -> Alert:
            return Alert(
                tenant_id=uuid.UUID(tenant.id), scope="tenant", owner_id=uuid.UUID(tenant.id),
                metric="requests", period="day", period_tag=f"d{threshold}", threshold=threshold,
                max=10, used=10, created_at=created_at, attempts=attempts,
            )  # fmt: skip

        due = alert(100, now - timedelta(minutes=5), 4)
        rows = [
            due,
            alert(80, now - timedelta(seconds=5), 1),  # its own retries may still be running
            alert(50, now - timedelta(days=2), 4),  # too old to matter any more
            alert(51, now - timedelta(minutes=5), MAX_ATTEMPTS),  # given up on
        ]
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            session.add_all(rows)
        async with httpx.AsyncClient() as client:
            notifier = AlertNotifier(sessionmaker, client, SecretBox(SECRET_KEY))
            assert await notifier.resend_undelivered() == 1
            assert await notifier.resend_undelivered() == 0  # delivered: not sent again
        assert len(upstream.hooks) == 1
        headers, body = upstream.hooks[0]
        _verify(headers, body, secret)
        assert json.loads(body)["id"] == str(due.id)
        async with sessionmaker() as session:
            stored = await session.get(Alert, due.id)
            assert stored is not None
            assert stored.attempts == 5
            assert stored.delivered_at is not None

    async def test_closing_writes_the_alerts_that_fired_and_leaves_delivery_to_the_sweep(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, engine: AsyncEngine
    ):
        """A process shutting down as a limit is crossed: the alert is written, not lost to
        the cancellation, and no connection is left holding a lock (SQLite's write lock)."""
        tenant = await create_tenant(http)
        await _configure(http, tenant, upstream.hooks_url)
        tenant_id = uuid.UUID(tenant.id)
        crossing = Crossing(
            tenant_id=tenant_id, scope="tenant", owner_id=tenant_id,
            limit=Limit("requests", "day", 10), period_tag="d20261207", threshold=80, used=8,
        )  # fmt: skip
        sessionmaker = create_sessionmaker(engine)
        async with httpx.AsyncClient() as client:
            notifier = AlertNotifier(sessionmaker, client, SecretBox(SECRET_KEY))
            notifier.crossed([crossing])
            await notifier.close()  # before the task that writes it has even started
        async with sessionmaker() as session, session.begin():  # takes the write lock
            rows = (await session.execute(select(Alert))).scalars().all()
            assert [(row.threshold, row.attempts, row.delivered_at) for row in rows] == [
                (80, 0, None)
            ]
            rows[0].last_error = "written after the close"
        assert upstream.hooks == []  # delivery is the resend sweep's
