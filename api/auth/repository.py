from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import ApiKey, KeySecret
from api.kit.repository import TenantRepository
from api.tenant.models import Tenant


class ApiKeyRepository(TenantRepository[ApiKey]):
    model = ApiKey

    async def by_ids(self, key_ids: list[uuid.UUID]) -> list[ApiKey]:
        if not key_ids:
            return []
        return await self._all(self.base().where(ApiKey.id.in_(key_ids)))

    async def with_tenant_limits(
        self, key_id: uuid.UUID
    ) -> tuple[ApiKey, list[dict[str, Any]]] | None:
        statement = (
            select(ApiKey, Tenant.limits)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.tenant_id == self.tenant_id, ApiKey.id == key_id)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return None if row is None else (row[0], list(row[1] or []))

    async def for_stripe_customer(self, customer_id: str) -> list[ApiKey]:
        return await self._all(self.base().where(ApiKey.stripe_customer_id == customer_id))

    async def _all(self, statement: Select[tuple[ApiKey]]) -> list[ApiKey]:
        rows: Sequence[Any] = (await self.session.execute(statement)).scalars().all()
        return list(rows)

    async def expire_secrets(self, key: ApiKey, at: datetime) -> None:
        """Give every still-valid secret of `key` an expiry no later than `at`."""
        await self.session.execute(
            update(KeySecret)
            .where(
                KeySecret.key_id == key.id,
                or_(KeySecret.expires_at.is_(None), KeySecret.expires_at > at),
            )
            .values(expires_at=at)
        )


async def find_by_secret_hash_unscoped(
    session: AsyncSession, secret_hash: str
) -> tuple[ApiKey, KeySecret, list[dict[str, Any]]] | None:
    """Authentication is the one lookup that precedes knowing the tenant; it also reads the
    tenant's limits, which every request of the key is held against."""
    statement = (
        select(ApiKey, KeySecret, Tenant.limits)
        .join(KeySecret, KeySecret.key_id == ApiKey.id)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(KeySecret.secret_hash == secret_hash)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1], list(row[2] or []))
