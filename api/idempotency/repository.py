from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import insert_ignoring_conflicts
from api.idempotency.models import IdempotencyRecord
from api.kit.time import utcnow


def _where(tenant_id: uuid.UUID, route: str, key: str) -> tuple[ColumnElement[bool], ...]:
    return (
        IdempotencyRecord.tenant_id == tenant_id,
        IdempotencyRecord.route == route,
        IdempotencyRecord.key == key,
    )


async def forget_older_than(
    session: AsyncSession, tenant_id: uuid.UUID, route: str, key: str, cutoff: datetime
) -> None:
    await session.execute(
        delete(IdempotencyRecord).where(
            *_where(tenant_id, route, key), IdempotencyRecord.created_at < cutoff
        )
    )


async def insert(
    session: AsyncSession, tenant_id: uuid.UUID, route: str, key: str, request_hash: str
) -> bool:
    """True when this call inserted the record (no request had used the key)."""
    row = {"tenant_id": tenant_id, "route": route, "key": key, "request_hash": request_hash}
    inserted = await session.execute(
        insert_ignoring_conflicts(session, IdempotencyRecord)
        .values(**row, created_at=utcnow())
        .returning(IdempotencyRecord.key)
    )
    return inserted.scalar_one_or_none() is not None


async def get(
    session: AsyncSession, tenant_id: uuid.UUID, route: str, key: str
) -> IdempotencyRecord | None:
    result = await session.execute(select(IdempotencyRecord).where(*_where(tenant_id, route, key)))
    return result.scalar_one_or_none()
