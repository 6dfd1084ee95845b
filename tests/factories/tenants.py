"""Plain async factories that go through the public API, as a tenant would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-token"


@dataclass(frozen=True)
class TenantFixture:
    id: str
    master_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}


async def create_tenant(client: httpx.AsyncClient, name: str = "Acme") -> TenantFixture:
    response = await client.post(
        "/admin/tenants", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return TenantFixture(id=body["id"], master_key=body["master_key"])


async def create_key(
    client: httpx.AsyncClient, tenant: TenantFixture, **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/keys", json={"name": "user", **fields}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
