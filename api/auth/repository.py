from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import ApiKey, KeySecret
from api.kit.repository import TenantRepository


class ApiKeyRepository(TenantRepository[ApiKey]):
    model = ApiKey

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
) -> tuple[ApiKey, KeySecret] | None:
    """Authentication is the one lookup that precedes knowing the tenant."""
    statement = (
        select(ApiKey, KeySecret)
        .join(KeySecret, KeySecret.key_id == ApiKey.id)
        .where(KeySecret.secret_hash == secret_hash)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else (row[0], row[1])


async def get_key_unscoped(session: AsyncSession, key_id: uuid.UUID) -> ApiKey | None:
    return await session.get(ApiKey, key_id)
