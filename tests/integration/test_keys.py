"""Key management (SPEC §4, §5.1), run on PostgreSQL and on the embedded SQLite default."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.auth.secrets import LIVE_PREFIX, TEST_PREFIX
from api.kit.time import utcnow
from api.usage.rollups import insert_events
from tests.factories.tenants import bearer, create_key, create_tenant


class TestCreateKey:
    async def test_returns_secret_once_and_stores_every_field(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        expires = (utcnow() + timedelta(days=30)).replace(microsecond=0)
        body = await create_key(
            client,
            tenant,
            name="alice",
            max_spend_usd=12.5,
            limits=[{"metric": "requests", "period": "day", "max": 100}],
            allowed_providers=["openai", "anthropic"],
            allowed_models=["gpt-4o-mini"],
            rpm=60,
            tpm=100_000,
            stripe_customer_id="cus_123",
            metadata={"user_id": "u_1"},
            expires_at=expires.isoformat(),
        )
        assert body["object"] == "key"
        assert body["scope"] == "standard"
        assert body["secret"].startswith(LIVE_PREFIX)
        assert len(body["secret"]) >= len(LIVE_PREFIX) + 43
        assert body["secret"].startswith(body["prefix"])
        assert body["secret"].endswith(body["last_four"])

        fetched = await client.get(f"/v1/keys/{body['id']}", headers=tenant.headers)
        assert fetched.status_code == 200
        key = fetched.json()
        assert "secret" not in key
        assert key["name"] == "alice"
        assert key["max_spend_usd"] == 12.5
        assert {(lim["metric"], lim["period"], lim["max"]) for lim in key["limits"]} == {
            ("requests", "day", 100),
            ("spend_usd", "month", 12.5),
        }
        assert key["allowed_providers"] == ["openai", "anthropic"]
        assert key["allowed_models"] == ["gpt-4o-mini"]
        assert (key["rpm"], key["tpm"]) == (60, 100_000)
        assert key["stripe_customer_id"] == "cus_123"
        assert key["metadata"] == {"user_id": "u_1"}
        assert datetime.fromisoformat(key["expires_at"]) == expires
        assert key["test"] is False
        assert key["status"] == "active"

    async def test_test_key_has_test_prefix(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        body = await create_key(client, tenant, test=True)
        assert body["secret"].startswith(TEST_PREFIX)
        assert body["test"] is True
        own = await client.get("/v1/keys/self", headers=bearer(body["secret"]))
        assert own.status_code == 200
        assert own.json()["id"] == body["id"]

    async def test_new_secret_authenticates_with_each_header(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        secret = (await create_key(client, tenant))["secret"]
        for headers in (
            {"Authorization": f"Bearer {secret}"},
            {"x-api-key": secret},
            {"x-goog-api-key": secret},
        ):
            response = await client.get("/v1/keys/self", headers=headers)
            assert response.status_code == 200, headers

    async def test_expires_at_in_the_past_is_refused(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        past = (utcnow() - timedelta(minutes=1)).isoformat()
        response = await client.post(
            "/v1/keys", json={"name": "x", "expires_at": past}, headers=tenant.headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "expires_at"

    async def test_shorthand_and_monthly_spend_limit_together_are_refused(
        self, client: httpx.AsyncClient
    ):
        tenant = await create_tenant(client)
        response = await client.post(
            "/v1/keys",
            json={
                "name": "x",
                "max_spend_usd": 5,
                "limits": [{"metric": "spend_usd", "period": "month", "max": 6}],
            },
            headers=tenant.headers,
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "max_spend_usd"


class TestIdempotentCreate:
    async def test_a_retry_gets_the_same_key_and_secret(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = {**tenant.headers, "Idempotency-Key": "create-alice-1"}
        first = await client.post("/v1/keys", json={"name": "alice"}, headers=headers)
        again = await client.post("/v1/keys", json={"name": "alice"}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        listed = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
        assert sorted(k["name"] for k in listed) == ["alice", "master"]
        # The replayed secret is the real one.
        own = await client.get("/v1/keys/self", headers=bearer(again.json()["secret"]))
        assert own.json()["id"] == first.json()["id"]

    async def test_the_same_key_with_another_body_is_refused(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = {**tenant.headers, "Idempotency-Key": "k-1"}
        assert (
            await client.post("/v1/keys", json={"name": "a"}, headers=headers)
        ).status_code == 201
        other = await client.post("/v1/keys", json={"name": "b"}, headers=headers)
        assert other.status_code == 400
        assert other.json()["error"]["param"] == "Idempotency-Key"
        too_long = {**tenant.headers, "Idempotency-Key": "x" * 256}
        refused = await client.post("/v1/keys", json={"name": "c"}, headers=too_long)
        assert refused.status_code == 400

    async def test_concurrent_retries_create_one_key(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        headers = {**tenant.headers, "Idempotency-Key": "burst"}
        answers = await asyncio.gather(
            *(client.post("/v1/keys", json={"name": "bob"}, headers=headers) for _ in range(10))
        )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        listed = (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
        assert [k["name"] for k in listed].count("bob") == 1

    async def test_keys_are_per_tenant(self, client: httpx.AsyncClient):
        alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
        made = [
            await client.post(
                "/v1/keys", json={"name": "u"}, headers={**t.headers, "Idempotency-Key": "same"}
            )
            for t in (alpha, beta)
        ]
        assert made[0].json()["id"] != made[1].json()["id"]


class TestAuthentication:
    async def test_missing_key(self, client: httpx.AsyncClient):
        response = await client.get("/v1/keys/self")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "missing_api_key"
        assert response.headers["x-should-retry"] == "false"

    async def test_unknown_key(self, client: httpx.AsyncClient):
        response = await client.get("/v1/keys/self", headers=bearer(LIVE_PREFIX + "0" * 43))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"

    async def test_expired_key_is_refused(self, client: httpx.AsyncClient, engine: AsyncEngine):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        from sqlalchemy import update

        from api.auth.models import ApiKey

        async with engine.begin() as connection:
            await connection.execute(
                update(ApiKey)
                .where(ApiKey.id == uuid.UUID(key["id"]))
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        response = await client.get("/v1/keys/self", headers=bearer(key["secret"]))
        assert response.status_code == 401
        listed = await client.get(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert listed.json()["status"] == "expired"

    async def test_standard_key_cannot_manage_keys(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        other = await create_key(client, tenant, name="other")
        headers = bearer(key["secret"])
        attempts = [
            client.post("/v1/keys", json={"name": "x"}, headers=headers),
            client.get("/v1/keys", headers=headers),
            client.get(f"/v1/keys/{other['id']}", headers=headers),
            client.patch(f"/v1/keys/{other['id']}", json={"name": "y"}, headers=headers),
            client.delete(f"/v1/keys/{other['id']}", headers=headers),
            client.post(f"/v1/keys/{other['id']}/rotate", headers=headers),
        ]
        for response in await asyncio.gather(*attempts):
            assert response.status_code == 403, response.request.url
            assert response.json()["error"]["code"] == "insufficient_scope"


class TestListKeys:
    async def test_cursor_pages_visit_every_key_once(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        created = {(await create_key(client, tenant, name=f"k{i}"))["id"] for i in range(5)}
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/keys", params=params, headers=tenant.headers)).json()
            assert page["object"] == "list"
            pages += 1
            seen += [item["id"] for item in page["data"]]
            assert all("secret" not in item for item in page["data"])
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert pages == 3  # five standard keys plus the master key, two per page
        assert len(seen) == len(set(seen)) == 6
        assert created <= set(seen)

    async def test_bad_cursor_and_limit(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        bad_cursor = await client.get("/v1/keys?cursor=not-a-cursor", headers=tenant.headers)
        assert bad_cursor.status_code == 400
        assert bad_cursor.json()["error"]["param"] == "cursor"
        for limit in ("0", "101", "abc"):
            response = await client.get(f"/v1/keys?limit={limit}", headers=tenant.headers)
            assert response.status_code == 400
            assert response.json()["error"]["param"] == "limit"


class TestKeyUsage:
    async def test_get_key_shows_period_spend_and_remaining(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(client)
        key = await create_key(
            client,
            tenant,
            max_spend_usd=10,
            limits=[{"metric": "requests", "period": "day", "max": 5}],
        )
        now = utcnow()
        last_month = now.replace(day=1) - timedelta(days=1)  # always an earlier day too

        def event(
            cost: int, at: datetime, status: int = 200, tokens: int = 10
        ) -> dict[str, object]:
            return {
                "id": uuid.uuid4(),
                "request_id": f"req_{uuid.uuid4().hex}",
                "tenant_id": uuid.UUID(tenant.id),
                "key_id": uuid.UUID(key["id"]),
                "endpoint": "/v1/chat/completions",
                "model": "gpt-4o-mini",
                "provider": "openai",
                "status": status,
                "input_tokens": tokens,
                "output_tokens": tokens // 2,
                "cost_micros": cost,
                "created_at": at,
            }

        async with AsyncSession(engine) as session, session.begin():
            await insert_events(
                session,
                [
                    event(1_250_000, now),
                    event(750_001, now),
                    event(9_000_000, last_month),  # an earlier period does not count
                    event(0, now, status=502, tokens=0),  # failed before the model: free
                ],
            )
        body = (await client.get(f"/v1/keys/{key['id']}", headers=tenant.headers)).json()
        assert body["spend_micros"] == 2_000_001
        assert body["remaining_micros"] == 10_000_000 - 2_000_001
        assert body["remaining_usd"] == 7.999999
        by_metric = {lim["metric"]: lim for lim in body["limits"]}
        assert by_metric["spend_usd"]["used"] == 2.000001
        own = (await client.get("/v1/keys/self", headers=bearer(key["secret"]))).json()
        assert own["spend_micros"] == 2_000_001
        assert by_metric["requests"] == {
            "metric": "requests",
            "period": "day",
            "max": 5,
            "used": 2,
            "remaining": 3,
        }


class TestUpdateKey:
    async def test_patch_changes_only_given_fields(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(
            client, tenant, name="a", max_spend_usd=5, rpm=10, metadata={"x": "1"}
        )
        response = await client.patch(
            f"/v1/keys/{key['id']}", json={"name": "b", "tpm": 500}, headers=tenant.headers
        )
        assert response.status_code == 200
        body = response.json()
        assert (body["name"], body["tpm"], body["rpm"], body["max_spend_usd"]) == (
            "b",
            500,
            10,
            5.0,
        )
        assert body["metadata"] == {"x": "1"}

    async def test_max_spend_null_removes_the_monthly_limit_only(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(
            client,
            tenant,
            max_spend_usd=5,
            limits=[{"metric": "tokens", "period": "total", "max": 1000}],
        )
        body = (
            await client.patch(
                f"/v1/keys/{key['id']}", json={"max_spend_usd": None}, headers=tenant.headers
            )
        ).json()
        assert body["max_spend_usd"] is None
        assert [(lim["metric"], lim["max"]) for lim in body["limits"]] == [("tokens", 1000)]

    async def test_limits_replace_and_keep_the_shorthand(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant, max_spend_usd=5)
        body = (
            await client.patch(
                f"/v1/keys/{key['id']}",
                json={"limits": [{"metric": "requests", "period": "month", "max": 9}]},
                headers=tenant.headers,
            )
        ).json()
        assert body["max_spend_usd"] is None
        assert [(lim["metric"], lim["max"]) for lim in body["limits"]] == [("requests", 9)]

    async def test_null_name_is_refused(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        response = await client.patch(
            f"/v1/keys/{key['id']}", json={"name": None}, headers=tenant.headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "name"

    async def test_expiry_set_by_patch_applies_to_the_next_request(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        soon = (utcnow() + timedelta(seconds=1)).isoformat()
        patched = await client.patch(
            f"/v1/keys/{key['id']}", json={"expires_at": soon}, headers=tenant.headers
        )
        assert patched.status_code == 200
        assert (await client.get("/v1/keys/self", headers=bearer(key["secret"]))).status_code == 200
        await asyncio.sleep(1.2)
        assert (await client.get("/v1/keys/self", headers=bearer(key["secret"]))).status_code == 401


class TestRevokeKey:
    async def test_revoked_key_gets_401_and_history_is_kept(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        response = await client.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert response.status_code == 200
        assert response.json()["status"] == "revoked"
        denied = await client.get("/v1/keys/self", headers=bearer(key["secret"]))
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "invalid_api_key"
        kept = await client.get(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert kept.status_code == 200
        assert kept.json()["revoked_at"] is not None
        again = await client.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
        assert again.status_code == 200
        assert again.json()["revoked_at"] == kept.json()["revoked_at"]

    async def test_revoked_key_cannot_be_patched_or_rotated(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        await client.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
        patch = await client.patch(f"/v1/keys/{key['id']}", json={"rpm": 1}, headers=tenant.headers)
        rotate = await client.post(f"/v1/keys/{key['id']}/rotate", headers=tenant.headers)
        assert (patch.status_code, rotate.status_code) == (400, 400)

    async def test_master_key_cannot_be_revoked(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        own = (await client.get("/v1/keys/self", headers=tenant.headers)).json()
        assert own["scope"] == "master"
        response = await client.delete(f"/v1/keys/{own['id']}", headers=tenant.headers)
        assert response.status_code == 400
        assert (await client.get("/v1/keys", headers=tenant.headers)).status_code == 200


class TestRotateKey:
    async def test_immediate_rotation(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant, name="alice", max_spend_usd=3)
        response = await client.post(f"/v1/keys/{key['id']}/rotate", headers=tenant.headers)
        assert response.status_code == 200
        rotated = response.json()
        assert rotated["secret"] != key["secret"]
        assert (rotated["id"], rotated["name"], rotated["limits"]) == (
            key["id"],
            "alice",
            key["limits"],
        )
        old = await client.get("/v1/keys/self", headers=bearer(key["secret"]))
        assert old.status_code == 401
        new = await client.get("/v1/keys/self", headers=bearer(rotated["secret"]))
        assert new.status_code == 200
        assert new.json()["id"] == key["id"]

    async def test_grace_period_keeps_the_old_secret_until_it_ends(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        started = asyncio.get_running_loop().time()
        rotated = (
            await client.post(
                f"/v1/keys/{key['id']}/rotate", json={"grace_seconds": 2}, headers=tenant.headers
            )
        ).json()
        old = await client.get("/v1/keys/self", headers=bearer(key["secret"]))
        assert asyncio.get_running_loop().time() - started < 2
        assert old.status_code == 200
        await asyncio.sleep(2.2)
        assert (await client.get("/v1/keys/self", headers=bearer(key["secret"]))).status_code == 401
        assert (
            await client.get("/v1/keys/self", headers=bearer(rotated["secret"]))
        ).status_code == 200

    async def test_master_key_rotation(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        own = (await client.get("/v1/keys/self", headers=tenant.headers)).json()
        rotated = (await client.post(f"/v1/keys/{own['id']}/rotate", headers=tenant.headers)).json()
        assert (await client.get("/v1/keys", headers=tenant.headers)).status_code == 401
        assert (await client.get("/v1/keys", headers=bearer(rotated["secret"]))).status_code == 200
