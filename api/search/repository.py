"""All SQL of search: which thread messages wait to be indexed, claiming them, and the check of
every hit against the database before it is returned.

Indexing runs for every tenant at once (a worker's batch), so its helpers are `*_unscoped`;
what a search returns goes through `SearchRepository`, scoped to the caller's tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.kit.repository import TenantRepository
from api.thread.models import Thread, ThreadMessage


@dataclass(frozen=True, slots=True)
class Pending:
    """A message to index, with its thread's owner."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    key_id: uuid.UUID
    thread_id: uuid.UUID
    role: str
    content: list[dict[str, Any]]
    created_at: datetime


async def claim_pending_unscoped(
    session: AsyncSession, limit: int, tenant_id: uuid.UUID | None = None
) -> list[Pending]:
    """Up to `limit` unindexed messages, oldest first, locked until the session ends; rows
    another worker holds are skipped (`FOR UPDATE SKIP LOCKED`; SQLite has one writer)."""
    columns = (
        ThreadMessage.id, ThreadMessage.tenant_id, Thread.key_id, ThreadMessage.thread_id,
        ThreadMessage.role, ThreadMessage.content, ThreadMessage.created_at,
    )  # fmt: skip
    statement = (
        select(*columns)
        .join(Thread, Thread.id == ThreadMessage.thread_id)
        .where(ThreadMessage.indexed_at.is_(None))
        .order_by(ThreadMessage.created_at)
        .limit(limit)
        .with_for_update(of=ThreadMessage, skip_locked=True)
    )
    if tenant_id is not None:
        statement = statement.where(ThreadMessage.tenant_id == tenant_id)
    rows = (await session.execute(statement)).all()
    return [Pending(*row) for row in rows]


async def mark_indexed_unscoped(
    session: AsyncSession, ids: Sequence[uuid.UUID], when: datetime
) -> set[uuid.UUID]:
    """The ids that were marked: a message deleted meanwhile (its thread was) is not."""
    result = await session.execute(
        update(ThreadMessage)
        .where(ThreadMessage.id.in_(ids))
        .values(indexed_at=when)
        .returning(ThreadMessage.id)
    )
    return set(result.scalars())


async def count_unscoped(
    session: AsyncSession, tenant_id: uuid.UUID | None = None, *, pending: bool = False
) -> int:
    statement = select(func.count()).select_from(ThreadMessage)
    if tenant_id is not None:
        statement = statement.where(ThreadMessage.tenant_id == tenant_id)
    if pending:
        statement = statement.where(ThreadMessage.indexed_at.is_(None))
    return int((await session.execute(statement)).scalar_one())


async def reset_unscoped(session: AsyncSession, tenant_id: uuid.UUID | None = None) -> None:
    """Every message (of the tenant) is to be indexed again."""
    statement = update(ThreadMessage).values(indexed_at=None)
    if tenant_id is not None:
        statement = statement.where(ThreadMessage.tenant_id == tenant_id)
    await session.execute(statement)


class SearchRepository(TenantRepository[ThreadMessage]):
    model = ThreadMessage

    async def visible(
        self, ids: Sequence[uuid.UUID], owner_key_id: uuid.UUID | None
    ) -> dict[uuid.UUID, ThreadMessage]:
        """Those of `ids` that are messages of this tenant's threads (of `owner_key_id`'s when
        given): the check every hit passes before it is returned."""
        if not ids:
            return {}
        statement = (
            self.base()
            .join(Thread, Thread.id == ThreadMessage.thread_id)
            .where(Thread.tenant_id == self.tenant_id, ThreadMessage.id.in_(ids))
        )
        if owner_key_id is not None:
            statement = statement.where(Thread.key_id == owner_key_id)
        rows: Sequence[Any] = (await self.session.execute(statement)).scalars().all()
        return {row.id: row for row in rows}
