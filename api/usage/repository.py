from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.usage.models import UsageEvent


@dataclass(frozen=True, slots=True)
class KeyTotals:
    requests: int
    tokens: int
    cost_micros: int


async def key_totals(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    """What a key has used since `since` (all time when None); failed requests count nothing."""
    statement = select(
        func.count(UsageEvent.id),
        func.coalesce(func.sum(UsageEvent.input_tokens + UsageEvent.output_tokens), 0),
        func.coalesce(func.sum(UsageEvent.cost_micros), 0),
    ).where(
        UsageEvent.tenant_id == tenant_id,
        UsageEvent.key_id == key_id,
        UsageEvent.status < 400,
    )
    if since is not None:
        statement = statement.where(UsageEvent.created_at >= since)
    requests, tokens, cost = (await session.execute(statement)).one()
    return KeyTotals(requests=int(requests), tokens=int(tokens), cost_micros=int(cost))
