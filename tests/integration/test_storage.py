"""No secret is stored: only a peppered hash, the prefix and the last four characters."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories.tenants import create_key, create_tenant


class TestNoSecretStored:
    async def test_rows_hold_no_secret(self, client: httpx.AsyncClient, engine: AsyncEngine):
        tenant = await create_tenant(client)
        key = await create_key(client, tenant)
        rotated = (await client.post(f"/v1/keys/{key['id']}/rotate", headers=tenant.headers)).json()
        secrets = [tenant.master_key, key["secret"], rotated["secret"]]
        forbidden = set()
        for secret in secrets:
            body = secret.split("_", 2)[2]
            forbidden |= {secret, body, body[:-4], hashlib.sha256(secret.encode()).hexdigest()}

        dumped: list[str] = []
        async with engine.connect() as connection:
            for table in ("tenants", "api_keys", "key_secrets"):
                rows = (await connection.execute(text(f"SELECT * FROM {table}"))).all()
                assert rows, table
                dumped += [str(value) for row in rows for value in row]
        assert len([v for v in dumped if len(v) == 64]) >= 3  # the peppered hashes are there
        for value in dumped:
            for secret_part in forbidden:
                assert secret_part not in value
