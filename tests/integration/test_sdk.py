"""The bundled SDK against the in-process app (ASGITransport), PostgreSQL and SQLite."""

from __future__ import annotations

import httpx
import pytest
import tollgate

from tests.factories.tenants import create_tenant


class TestSdkKeys:
    async def test_key_lifecycle(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        transport = client._transport  # the in-process app behind the test client
        sdk = tollgate.AsyncClient(
            api_key=tenant.master_key,
            base_url=str(client.base_url),
            http_client=httpx.AsyncClient(transport=transport),
        )
        async with sdk:
            key = await sdk.keys.create(name="alice", max_spend_usd=20, metadata={"u": "1"})
            assert key.secret is not None
            assert key.secret.startswith("qlk_live_")
            fetched = await sdk.keys.retrieve(key.id)
            assert (fetched.max_spend_usd, fetched.spend_micros) == (20.0, 0)
            updated = await sdk.keys.update(key.id, max_spend_usd=None, rpm=5)
            assert (updated.max_spend_usd, updated.rpm) == (None, 5)
            rotated = await sdk.keys.rotate(key.id)
            assert rotated.secret not in (None, key.secret)
            names = [k.name async for k in sdk.keys.list(limit=1)]
            assert sorted(names) == ["alice", "master"]
            revoked = await sdk.keys.revoke(key.id)
            assert revoked.status == "revoked"
            with pytest.raises(tollgate.NotFoundError) as caught:
                await sdk.keys.retrieve("00000000-0000-0000-0000-000000000000")
            assert caught.value.request_id
            with pytest.raises(tollgate.BadRequestError) as bad:
                await sdk.keys.create(name="")
            assert bad.value.param == "name"

        user = tollgate.AsyncClient(
            api_key=rotated.secret,
            base_url=str(client.base_url),
            http_client=httpx.AsyncClient(transport=transport),
        )
        async with user:
            with pytest.raises(tollgate.AuthenticationError):
                await user.keys.retrieve_self()  # revoked above
