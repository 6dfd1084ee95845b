"""Admin tenants, health, readiness and request ids."""

from __future__ import annotations

import httpx

from api.settings import Settings
from tests.conftest import app_client
from tests.factories.tenants import ADMIN_TOKEN


class TestAdminTenants:
    async def test_creates_a_tenant_with_a_working_master_key(self, client: httpx.AsyncClient):
        response = await client.post(
            "/admin/tenants",
            json={"name": "Acme"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert response.status_code == 201
        body = response.json()
        assert body["object"] == "tenant"
        assert body["name"] == "Acme"
        own = await client.get("/v1/keys/self", headers={"x-api-key": body["master_key"]})
        assert own.json()["scope"] == "master"

    async def test_wrong_or_missing_admin_token(self, client: httpx.AsyncClient):
        wrong = await client.post(
            "/admin/tenants", json={"name": "x"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        missing = await client.post("/admin/tenants", json={"name": "x"})
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"

    async def test_admin_api_is_off_without_a_token(self, settings: Settings):
        async with app_client(settings.model_copy(update={"admin_token": None})) as client:
            response = await client.post(
                "/admin/tenants", json={"name": "x"}, headers={"Authorization": "Bearer anything"}
            )
        assert response.status_code == 404


class TestHealth:
    async def test_healthz(self, client: httpx.AsyncClient):
        response = await client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_metrics_need_the_admin_token(self, client: httpx.AsyncClient):
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        metrics = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert metrics.status_code == 200
        assert "tollgate_in_flight_requests" in metrics.text

    async def test_metrics_are_off_without_an_admin_token(self, settings: Settings):
        async with app_client(settings.model_copy(update={"admin_token": None})) as client:
            response = await client.get("/metrics", headers={"Authorization": "Bearer x"})
        assert response.status_code == 404

    async def test_readyz_checks_database_and_redis(
        self, client: httpx.AsyncClient, settings: Settings
    ):
        response = await client.get("/readyz")
        assert response.status_code == 200
        redis = "ok" if settings.redis_url else "not configured"
        # Search is off in these settings; its tests check Qdrant's line.
        checks = {"database": "ok", "redis": redis, "qdrant": "not configured"}
        assert response.json()["checks"] == checks

    async def test_readyz_reports_an_unreachable_redis(self, settings: Settings):
        from tools.testenv import free_port

        dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
        async with app_client(dead) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["redis"] == "unreachable"
        assert response.json()["checks"]["database"] == "ok"


class TestDiscovery:
    async def test_openapi_and_llms_txt(self, client: httpx.AsyncClient):
        spec = (await client.get("/openapi.json")).json()
        for path in ("/v1/keys", "/v1/chat/completions", "/v1/usage", "/v1/settings",
                     "/v1/billing/sync", "/v1/messages", "/v1/messages/count_tokens",
                     "/v1/responses", "/v1/search"):  # fmt: skip
            assert path in spec["paths"], path
        llms = await client.get("/llms.txt")
        assert llms.status_code == 200
        assert llms.headers["content-type"].startswith("text/markdown")
        for path in ("/v1/chat/completions", "/v1/keys", "/v1/usage", "/v1/settings",
                     "/v1/billing/sync", "/v1/messages", "/v1/messages/count_tokens",
                     "/v1/responses", "/v1/search"):  # fmt: skip
            assert path in llms.text


class TestRequestId:
    async def test_generated_on_every_response(self, client: httpx.AsyncClient):
        for response in (await client.get("/healthz"), await client.get("/v1/keys")):
            assert response.headers["x-request-id"].startswith("req_")
            assert response.headers["request-id"] == response.headers["x-request-id"]

    async def test_sane_client_id_is_echoed_and_insane_one_replaced(
        self, client: httpx.AsyncClient
    ):
        echoed = await client.get("/healthz", headers={"x-request-id": "trace-42.a:b"})
        assert echoed.headers["x-request-id"] == "trace-42.a:b"
        replaced = await client.get("/healthz", headers={"x-request-id": "x" * 500})
        assert replaced.headers["x-request-id"].startswith("req_")

    async def test_a_trailing_newline_is_not_sane(self, client: httpx.AsyncClient):
        # `$` matches before a final newline: the id must match whole, on both ways in (the
        # middleware, and the proxy lane that skips it).
        for method, path in (("GET", "/healthz"), ("POST", "/v1/chat/completions")):
            response = await client.request(method, path, headers={"x-request-id": "trace-42\n"})
            assert response.headers["x-request-id"].startswith("req_"), path
            assert response.headers["request-id"] == response.headers["x-request-id"]
