from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import ApiKey
from api.kit.repository import TenantRepository
from api.usage.models import UsageEvent


@dataclass(frozen=True, slots=True)
class KeyTotals:
    requests: int
    tokens: int
    cost_micros: int


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime
    end: datetime
    key_id: uuid.UUID | None = None
    model: str | None = None


async def key_totals(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    where = (UsageEvent.tenant_id == tenant_id, UsageEvent.key_id == key_id)
    return await _totals(session, since, *where)


async def key_totals_unscoped(
    session: AsyncSession, key_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    """For the cap's counters, which know the key, not the caller."""
    return await _totals(session, since, UsageEvent.key_id == key_id)


async def tenant_totals(
    session: AsyncSession, tenant_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    return await _totals(session, since, UsageEvent.tenant_id == tenant_id)


# A request counts against `requests` limits when it succeeded or was billed for tokens.
_REACHED_THE_MODEL = or_(
    UsageEvent.status < 400, UsageEvent.input_tokens + UsageEvent.output_tokens > 0
)


async def _totals(
    session: AsyncSession, since: datetime | None, *where: ColumnElement[bool]
) -> KeyTotals:
    """What the matching events used since `since` (all time when None).

    Tokens and cost count whatever was billed, cut-off streams included (failures cost 0);
    `requests` counts the requests that reached the model.
    """
    statement = select(
        func.coalesce(func.sum(case((_REACHED_THE_MODEL, 1), else_=0)), 0),
        func.coalesce(func.sum(UsageEvent.input_tokens + UsageEvent.output_tokens), 0),
        func.coalesce(func.sum(UsageEvent.cost_micros), 0),
    ).where(*where)
    if since is not None:
        statement = statement.where(UsageEvent.created_at >= since)
    requests, tokens, cost = (await session.execute(statement)).one()
    return KeyTotals(requests=int(requests), tokens=int(tokens), cost_micros=int(cost))


EXPORT_COLUMNS = (
    "id", "key_id", "key_name", "model", "provider", "input_tokens", "cached_input_tokens",
    "output_tokens", "cost_micros", "latency_ms", "status", "created_at", "tool_calls",
)  # fmt: skip

SUM_COLUMNS = (
    "requests", "failed", "input_tokens", "cached_input_tokens", "output_tokens", "cost_micros",
)  # fmt: skip
_SUMS = (
    func.count(UsageEvent.id).label("requests"),
    func.coalesce(func.sum(case((UsageEvent.status >= 400, 1), else_=0)), 0).label("failed"),
    func.coalesce(func.sum(UsageEvent.input_tokens), 0).label("input_tokens"),
    func.coalesce(func.sum(UsageEvent.cached_input_tokens), 0).label("cached_input_tokens"),
    func.coalesce(func.sum(UsageEvent.output_tokens), 0).label("output_tokens"),
    func.coalesce(func.sum(UsageEvent.cost_micros), 0).label("cost_micros"),
)


class UsageRepository(TenantRepository[UsageEvent]):
    model = UsageEvent

    def _where(self, statement: Select[Any], where: UsageFilter) -> Select[Any]:
        statement = statement.where(
            UsageEvent.tenant_id == self.tenant_id,
            UsageEvent.created_at >= where.start,
            UsageEvent.created_at < where.end,
        )
        if where.key_id is not None:
            statement = statement.where(UsageEvent.key_id == where.key_id)
        if where.model is not None:
            statement = statement.where(UsageEvent.model == where.model)
        return statement

    async def grouped(self, where: UsageFilter, group: str) -> list[dict[str, Any]]:
        column: ColumnElement[Any]
        if group == "key":
            statement = (
                select(UsageEvent.key_id, ApiKey.name.label("key_name"), *_SUMS)
                .join(ApiKey, ApiKey.id == UsageEvent.key_id)
                .group_by(UsageEvent.key_id, ApiKey.name)
            )
        else:
            column = UsageEvent.model.expression if group == "model" else self._day()
            statement = select(column.label(group), *_SUMS).group_by(column).order_by(column)
        rows = (await self.session.execute(self._where(statement, where))).all()
        # PostgreSQL sums BIGINT into NUMERIC; the API speaks integers.
        return [
            {k: int(v) if isinstance(v, Decimal) else v for k, v in row._mapping.items()}
            for row in rows
        ]

    async def spend_by_key(self, start: datetime, end: datetime) -> dict[uuid.UUID, int]:
        """Each key's billed spend in [start, end), from the ledger (keys that spent > 0)."""
        total = func.sum(UsageEvent.cost_micros)
        statement = (
            select(UsageEvent.key_id, total)
            .where(
                UsageEvent.tenant_id == self.tenant_id,
                UsageEvent.created_at >= start,
                UsageEvent.created_at < end,
            )
            .group_by(UsageEvent.key_id)
            .having(total > 0)
        )
        return {key_id: int(spend) for key_id, spend in (await self.session.execute(statement))}

    def _day(self) -> ColumnElement[Any]:
        if self.session.get_bind().dialect.name == "postgresql":
            return func.to_char(func.timezone("UTC", UsageEvent.created_at), "YYYY-MM-DD")
        return func.strftime("%Y-%m-%d", UsageEvent.created_at)

    async def stream_export(self, where: UsageFilter) -> AsyncIterator[tuple[Any, ...]]:
        """Rows in EXPORT_COLUMNS order, fetched a thousand at a time (server-side cursor)."""
        columns = [
            ApiKey.name if name == "key_name" else getattr(UsageEvent, name)
            for name in EXPORT_COLUMNS
        ]
        statement = (
            select(*columns)
            .join(ApiKey, ApiKey.id == UsageEvent.key_id)
            .order_by(UsageEvent.created_at, UsageEvent.id)
        )
        result = await self.session.stream(
            self._where(statement, where).execution_options(yield_per=1000)
        )
        async for row in result:
            yield tuple(row)
