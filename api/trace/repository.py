"""All SQL of request traces. Reads start from the tenant-scoped `base()`; the retention sweep
(`*_unscoped`) deletes across tenants, a batch at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import insert_ignoring_conflicts
from api.kit.repository import TenantRepository
from api.tenant.models import Tenant
from api.trace.models import RequestTrace
from api.usage.models import UsageEvent

# Rows per DELETE: short statements, so the sweep never holds locks on a hot table for long.
BATCH = 5000


class TraceRepository(TenantRepository[RequestTrace]):
    model = RequestTrace

    async def find(
        self, trace_id: str, key_id: uuid.UUID | None
    ) -> tuple[RequestTrace, UsageEvent | None] | None:
        """The latest request of this tenant (of `key_id`, when given) with this trace id, and
        its request-log entry while the log keeps it."""
        statement = self.base().where(RequestTrace.trace_id == trace_id)
        if key_id is not None:
            statement = statement.where(RequestTrace.key_id == key_id)
        statement = statement.order_by(RequestTrace.created_at.desc()).limit(1)
        found = cast(RequestTrace | None, (await self.session.scalars(statement)).first())
        if found is None:
            return None
        event = await self.session.execute(
            select(UsageEvent).where(
                UsageEvent.tenant_id == self.tenant_id, UsageEvent.id == found.id
            )
        )
        return found, event.scalar_one_or_none()

    async def trace_ids(self, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The trace id of each of these request-log entries that still has its trace."""
        if not event_ids:
            return {}
        statement = select(RequestTrace.id, RequestTrace.trace_id).where(
            RequestTrace.tenant_id == self.tenant_id, RequestTrace.id.in_(list(event_ids))
        )
        return {row.id: row.trace_id for row in await self.session.execute(statement)}


async def retentions_unscoped(session: AsyncSession) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    """Every tenant that set a retention of its own, with it (the tenants table is small)."""
    rows = await session.execute(select(Tenant.id, Tenant.settings))
    return [
        (tenant_id, settings["retention"])
        for tenant_id, settings in rows
        if isinstance(settings, dict) and isinstance(settings.get("retention"), dict)
    ]


async def insert_traces(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the traces of usage events just inserted (their ids), ignoring ids present."""
    if rows:
        await session.execute(insert_ignoring_conflicts(session, RequestTrace), list(rows))


async def expire_unscoped(
    session: AsyncSession,
    before: datetime,
    model: Any = RequestTrace,
    limit: int | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
    other_than: Sequence[uuid.UUID] = (),
) -> int:
    """Delete up to `limit` (`BATCH`) rows of `model` (traces, or request-log entries) created
    before `before`, by primary key: one tenant's, or every tenant's but `other_than`'s (those
    with a retention of their own); returns how many went."""
    stale = select(model.id).where(model.created_at < before)
    if tenant_id is not None:
        stale = stale.where(model.tenant_id == tenant_id)
    elif other_than:
        stale = stale.where(model.tenant_id.not_in(list(other_than)))
    stale = stale.limit(limit or BATCH)
    ids = list((await session.execute(stale)).scalars())
    if ids:
        await session.execute(delete(model).where(model.id.in_(ids)))
    return len(ids)
