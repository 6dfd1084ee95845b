"""Tenant isolation is absolute: another tenant's key is a 404, never a 403 (SPEC §6)."""

from __future__ import annotations

import httpx

from tests.factories.tenants import create_key, create_tenant


class TestTenantIsolation:
    async def test_master_key_cannot_touch_another_tenants_keys(self, client: httpx.AsyncClient):
        alpha = await create_tenant(client, "alpha")
        beta = await create_tenant(client, "beta")
        theirs = await create_key(client, beta, name="beta-user")
        beta_master = (await client.get("/v1/keys/self", headers=beta.headers)).json()

        for target in (theirs["id"], beta_master["id"]):
            responses = [
                await client.get(f"/v1/keys/{target}", headers=alpha.headers),
                await client.patch(
                    f"/v1/keys/{target}", json={"name": "pwned"}, headers=alpha.headers
                ),
                await client.post(f"/v1/keys/{target}/rotate", headers=alpha.headers),
                await client.delete(f"/v1/keys/{target}", headers=alpha.headers),
            ]
            for response in responses:
                assert response.status_code == 404, (response.request.method, response.text)
                assert response.json()["error"]["code"] == "not_found"

        listed = (await client.get("/v1/keys?limit=100", headers=alpha.headers)).json()
        assert {item["id"] for item in listed["data"]}.isdisjoint({theirs["id"], beta_master["id"]})

        # Nothing about beta's key changed, and its secret still works.
        intact = (await client.get(f"/v1/keys/{theirs['id']}", headers=beta.headers)).json()
        assert intact["name"] == "beta-user"
        assert intact["status"] == "active"
        own = await client.get("/v1/keys/self", headers={"x-api-key": theirs["secret"]})
        assert own.status_code == 200

    async def test_unknown_and_malformed_ids_are_404(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        for key_id in ("00000000-0000-0000-0000-000000000000", "nope", "1' OR '1'='1"):
            response = await client.get(f"/v1/keys/{key_id}", headers=tenant.headers)
            assert response.status_code == 404
