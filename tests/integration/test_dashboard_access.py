"""Who may see the dashboard: only a master key signs in, sessions end, every route needs one,
every form needs its CSRF token, and one tenant never sees another's objects (SPEC §5.13)."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict
from datetime import timedelta

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from api.billing.models import BillingRun
from api.dashboard.models import DashboardSession
from api.db import create_sessionmaker
from api.kit.time import utcnow
from api.settings import Settings
from api.usage.ledger import UsageRecord, write_rows
from tests.dashboard import dashboard_client, field, sign_in
from tests.factories.tenants import TenantFixture, create_key, create_tenant

SESSION = "__Host-tollgate_session"
# Routes that are open before signing in (`/dashboard` only redirects to the keys page).
PUBLIC = {"/dashboard", "/dashboard/login", "/dashboard/static/{name}"}


def _dashboard_routes(settings: Settings) -> list[tuple[str, str]]:
    """(method, path) of every dashboard route, read from the app's route table: a new page
    is checked here without being listed."""
    app = create_app(settings)
    routes: list[tuple[str, set[str]]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            routes.append((route.path, route.methods))
        elif hasattr(route, "effective_route_contexts"):  # an included router (FastAPI ≥ 0.160)
            routes += [(item.path, item.methods) for item in route.effective_route_contexts()]
    found = [
        (method, path)
        for path, methods in routes
        if path.startswith("/dashboard") and path not in PUBLIC
        for method in sorted(methods)
    ]
    assert ("GET", "/dashboard/keys") in found
    assert ("POST", "/dashboard/keys") in found
    return found


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


async def _login_page(client: httpx.AsyncClient) -> str:
    return field((await client.get("/dashboard/login")).text, "login_token")


class TestSigningIn:
    async def test_a_wrong_master_key_cannot_sign_in(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            for wrong in (tenant.master_key + "x", "qlk_live_" + "a" * 43, "", "   "):
                response = await client.post(
                    "/dashboard/login",
                    data={"login_token": await _login_page(client), "master_key": wrong},
                )
                assert response.status_code in (400, 401), wrong
                assert SESSION not in response.headers.get("set-cookie", "")
            assert (await client.get("/dashboard/keys")).status_code == 303

    async def test_a_standard_key_cannot_sign_in(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            standard = await create_key(client, tenant, name="end-user")
            response = await client.post(
                "/dashboard/login",
                data={"login_token": await _login_page(client), "master_key": standard["secret"]},
            )
            assert response.status_code == 403
            assert "That is not a valid master key." in response.text
            assert SESSION not in response.headers.get("set-cookie", "")
            assert (await client.get("/dashboard/keys")).status_code == 303

    async def test_the_login_form_needs_its_own_token(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await _login_page(client)  # the cookie is set, but the form's copy is missing
            forged = await client.post("/dashboard/login", data={"master_key": tenant.master_key})
            assert forged.status_code == 403
            client.cookies.clear()  # a form from elsewhere: a token, but no cookie to match
            forged = await client.post(
                "/dashboard/login",
                data={"login_token": "guessed", "master_key": tenant.master_key},
            )
            assert forged.status_code == 403
            assert (await client.get("/dashboard/keys")).status_code == 303

    async def test_the_session_cookie_is_locked_down(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            response = await client.post(
                "/dashboard/login",
                data={"login_token": await _login_page(client), "master_key": tenant.master_key},
            )
            assert response.status_code == 303
            cookie = next(
                value for name, value in response.headers.multi_items()
                if name == "set-cookie" and value.startswith(SESSION)
            )  # fmt: skip
            attributes = {part.strip().lower() for part in cookie.split(";")}
            assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
            assert f"max-age={settings.dashboard_session_minutes * 60}" in attributes
            page = await client.get("/dashboard/keys")
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert page.headers["cache-control"] == "no-store"

    @pytest.mark.parametrize("next_path", ["https://evil.test/", "//evil.test/x", "/v1/keys"])
    async def test_login_never_sends_a_browser_off_the_dashboard(
        self, settings: Settings, next_path: str
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            response = await client.post(
                "/dashboard/login",
                data={
                    "login_token": await _login_page(client),
                    "master_key": tenant.master_key,
                    "next": next_path,
                },
            )
            assert response.headers["location"] == "/dashboard/keys"


class TestSessionsEnd:
    async def test_an_expired_session_sends_the_browser_to_the_login_page(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            async with engine.begin() as connection:
                await connection.execute(
                    update(DashboardSession).values(expires_at=utcnow() - timedelta(seconds=1))
                )
            response = await client.get("/dashboard/keys?cursor=abc")
            assert response.status_code == 303
            assert response.headers["location"] == (
                "/dashboard/login?next=/dashboard/keys%3Fcursor%3Dabc"
            )

    async def test_logging_out_deletes_the_session(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            stolen = dict(client.cookies)
            response = await client.post("/dashboard/logout", data={"csrf": csrf})
            assert response.status_code == 303
            assert response.headers["location"] == "/dashboard/login"
            async with engine.connect() as connection:
                left = (await connection.execute(select(DashboardSession.id))).all()
            assert left == []
            client.cookies.update(stolen)  # a copy of the cookie is worth nothing now
            assert (await client.get("/dashboard/keys")).status_code == 303

    async def test_rotating_the_master_key_ends_its_sessions(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            master = (await client.get("/v1/keys/self", headers=tenant.headers)).json()
            rotated = await client.post(f"/v1/keys/{master['id']}/rotate", headers=tenant.headers)
            assert rotated.status_code == 200
            assert (await client.get("/dashboard/keys")).status_code == 303
            await sign_in(client, rotated.json()["secret"])  # the new secret signs in

    async def test_sessions_last_the_configured_time(self, settings: Settings):
        short = settings.model_copy(update={"dashboard_session_minutes": 5})
        async with dashboard_client(short) as client:
            tenant = await create_tenant(client)
            response = await client.post(
                "/dashboard/login",
                data={"login_token": await _login_page(client), "master_key": tenant.master_key},
            )
            assert "Max-Age=300;" in response.headers["set-cookie"]


class TestEveryRouteNeedsASession:
    async def test_without_a_session_every_route_redirects_to_login(self, settings: Settings):
        async with dashboard_client(settings) as client:
            for method, path in _dashboard_routes(settings):
                url = _fill(path, str(uuid.uuid4()))
                response = await client.request(method, url, data={"csrf": "x"})
                assert response.status_code == 303, (method, path, response.status_code)
                assert response.headers["location"].startswith("/dashboard/login"), path

    async def test_a_forged_post_gets_403_and_changes_nothing(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            target = await create_key(client, tenant, name="target")
            posts = [path for method, path in _dashboard_routes(settings) if method == "POST"]
            for path in posts:
                url = _fill(path, target["id"])
                for data, headers in (
                    ({}, {}),  # no token
                    ({"csrf": csrf + "x"}, {}),  # a wrong one
                    ({"csrf": csrf}, {"origin": "https://evil.test"}),  # the right one, elsewhere
                    ({"csrf": csrf}, {"sec-fetch-site": "cross-site"}),
                ):
                    response = await client.post(url, data=data, headers=headers)
                    assert response.status_code == 403, (path, data, headers)
            after = (await client.get(f"/v1/keys/{target['id']}", headers=tenant.headers)).json()
            assert after["status"] == "active"
            assert after["name"] == "target"
            assert after["limits"] == []
            assert after["prefix"] == target["prefix"]
            keys = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
            assert len(keys) == 2  # the master key and the target: nothing was created
            assert (await client.get("/dashboard/keys")).status_code == 200  # still signed in


async def _objects_of(
    client: httpx.AsyncClient, engine: AsyncEngine, tenant: TenantFixture
) -> dict[str, str]:
    """One object of each kind a dashboard URL names, owned by `tenant`, by its path name."""
    key = await create_key(client, tenant, name="beta-secret-user", test=True)
    headers = {"Authorization": f"Bearer {key['secret']}"}
    thread = await client.post("/v1/threads", json={}, headers=headers)
    assert thread.status_code == 201, thread.text
    tool = await client.post(
        "/v1/tools",
        json={"name": "beta_secret_tool", "description": "beta's", "webhook_url":
              "http://127.0.0.1:9/hook", "input_schema": {"type": "object"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert tool.status_code == 201, tool.text
    job = await client.post(
        "/v1/jobs",
        json={"endpoint": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}},
        headers=headers,
    )  # fmt: skip
    assert job.status_code == 202, job.text
    event = UsageRecord(
        request_id="req_beta", tenant_id=uuid.UUID(tenant.id), key_id=uuid.UUID(key["id"]),
        created_at=utcnow(), endpoint="/v1/chat/completions", model="beta-secret-model",
        provider="openai", status=200,
    )  # fmt: skip
    assert await write_rows(create_sessionmaker(engine), [asdict(event)]) == []
    run = BillingRun(tenant_id=uuid.UUID(tenant.id), period="2026-01", currency="usd",
                     markup_bps=0)  # fmt: skip
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(run)
    return {
        "key_id": key["id"], "thread_id": thread.json()["id"], "tool_id": tool.json()["id"],
        "job_id": job.json()["id"], "event_id": str(event.id), "run_id": str(run.id),
    }  # fmt: skip


class TestTenantIsolation:
    async def test_another_tenants_ids_are_404_pages(self, settings: Settings, engine: AsyncEngine):
        webhooks = settings.model_copy(update={"allow_private_webhooks": True})
        async with dashboard_client(webhooks) as client:
            alpha = await create_tenant(client, "alpha")
            beta = await create_tenant(client, "beta")
            theirs = await _objects_of(client, engine, beta)
            csrf = await sign_in(client, alpha.master_key)
            with_ids = [
                (method, path) for method, path in _dashboard_routes(settings) if "{" in path
            ]
            for method, path in with_ids:
                names = re.findall(r"\{([^}]+)\}", path)
                missing = [name for name in names if name not in theirs]
                assert not missing, f"{path}: add the tenant-isolation case for {missing}"
                url = path
                for name in names:
                    url = url.replace("{" + name + "}", theirs[name])
                response = await client.request(method, url, data={"csrf": csrf})
                assert response.status_code == 404, (method, path, response.status_code)
                for secret in ("beta-secret-user", "beta_secret_tool", "beta-secret-model"):
                    assert secret not in response.text, (path, secret)
            for listing in ("keys", "tools", "logs", "usage", "threads", "jobs", "billing"):
                listed = await client.get(f"/dashboard/{listing}")
                assert listed.status_code == 200
                for secret in ("beta-secret-user", "beta_secret_tool", "beta-secret-model"):
                    assert secret not in listed.text, (listing, secret)
                for object_id in theirs.values():
                    assert object_id not in listed.text, (listing, object_id)
            after = (await client.get(f"/v1/keys/{theirs['key_id']}", headers=beta.headers)).json()
            assert after["status"] == "active"
            assert after["limits"] == []

    async def test_malformed_ids_are_404_pages(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            for bad in ("nope", "1' OR '1'='1", "00000000-0000-0000-0000-000000000000"):
                response = await client.get(f"/dashboard/keys/{bad}")
                assert response.status_code == 404
                assert response.headers["content-type"].startswith("text/html")


class TestBehindAProxyAndOddRequests:
    async def test_a_proxy_that_rewrites_host_still_lets_same_origin_posts_through(
        self, settings: Settings
    ):
        """nginx's default `proxy_set_header Host $proxy_host`: the browser's Origin names the
        public host, Host the upstream; Sec-Fetch-Site is what decides."""
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            csrf = await sign_in(client, tenant.master_key)
            proxied = {"origin": "https://gw.example.com", "sec-fetch-site": "same-origin"}
            created = await client.post(
                "/dashboard/keys", data={"csrf": csrf, "name": "via-proxy"}, headers=proxied
            )
            assert created.status_code == 201
            for headers in (
                {"origin": "https://gw.example.com"},  # an old browser: Origin must be the host
                {"origin": "null"},
                {"sec-fetch-site": "same-site"},
            ):
                refused = await client.post(
                    "/dashboard/keys", data={"csrf": csrf, "name": "x"}, headers=headers
                )
                assert refused.status_code == 403, headers

    async def test_signing_in_without_the_login_cookie_is_refused_whatever_the_token(
        self, settings: Settings
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            for token in ("\0", "", "x"):
                forged = await client.post(
                    "/dashboard/login", data={"login_token": token, "master_key": tenant.master_key}
                )
                assert forged.status_code == 403, repr(token)
                assert SESSION not in forged.headers.get("set-cookie", "")

    async def test_pathological_cursors_unknown_pages_and_wrong_methods_are_html_4xx(
        self, settings: Settings
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            nested = "WyJb" * 700  # base64 of deeply nested JSON arrays
            for path in ("keys", "tools", "jobs", "threads", "billing", "logs"):
                for cursor in (nested[:600], nested[:512], "%%%"):
                    response = await client.get(f"/dashboard/{path}", params={"cursor": cursor})
                    assert response.status_code == 400, (path, cursor[:10], response.text[:200])
                    assert response.headers["content-type"].startswith("text/html"), path
            for method, path in (("GET", "/dashboard/nowhere"), ("PUT", "/dashboard/keys")):
                response = await client.request(method, path)
                assert response.status_code in (404, 405), path
                assert response.headers["content-type"].startswith("text/html"), path
                assert "Tollgate" in response.text

    async def test_a_billing_period_in_year_zero_is_a_400(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            response = await client.post(
                "/v1/billing/sync", json={"period": "0000-01", "dry_run": True},
                headers=tenant.headers,
            )  # fmt: skip
            assert response.status_code == 400
            assert response.json()["error"]["param"] == "period"
