from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Subquery, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import ApiKey
from api.kit.repository import TenantRepository
from api.usage import rollups
from api.usage.models import UsageEvent


@dataclass(frozen=True, slots=True)
class KeyTotals:
    requests: int
    tokens: int  # input + output
    cost_micros: int
    # Per-unit use (SPEC §5.12): seconds of audio transcribed, characters spoken, images made.
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0

    def used(self, metric: str) -> int:
        """What a limit of `metric` has counted (`requests`: those that reached the model)."""
        if metric == "spend_usd":
            return self.cost_micros
        return int(getattr(self, metric))


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: datetime
    end: datetime
    key_id: uuid.UUID | None = None
    model: str | None = None


async def key_totals(
    session: AsyncSession, tenant_id: uuid.UUID, key_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    return await _totals(session, since, tenant_id=tenant_id, key_id=key_id)


async def key_totals_unscoped(
    session: AsyncSession, key_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    """For the cap's counters, which know the key, not the caller."""
    return await _totals(session, since, key_id=key_id)


async def tenant_totals(
    session: AsyncSession, tenant_id: uuid.UUID, since: datetime | None
) -> KeyTotals:
    return await _totals(session, since, tenant_id=tenant_id)


async def _totals(
    session: AsyncSession,
    since: datetime | None,
    *,
    tenant_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
) -> KeyTotals:
    """What the matching events used since `since` (all time when None), from the rollups.

    Tokens, the per-unit quantities and cost count whatever was billed, cut-off streams
    included (failures cost 0); `requests` counts the requests that reached the model (they
    succeeded, or were billed).
    """
    statement, params = rollups.summed(session, since, None, tenant_id=tenant_id, key_id=key_id)
    row = (await session.execute(statement, params)).one()._mapping
    return KeyTotals(
        requests=int(row["reached"]),
        tokens=int(row["input_tokens"]) + int(row["output_tokens"]),
        cost_micros=int(row["cost_micros"]),
        audio_seconds=int(row["audio_seconds"]),
        characters=int(row["characters"]),
        images=int(row["images"]),
    )


# New columns go last: a reader of the earlier columns by position keeps working.
EXPORT_COLUMNS = (
    "id", "key_id", "key_name", "model", "provider", "input_tokens", "cached_input_tokens",
    "output_tokens", "cost_micros", "latency_ms", "status", "created_at", "tool_calls",
    "audio_seconds", "characters", "images", "cache", "saved_tokens", "saved_micros",
)  # fmt: skip

SUM_COLUMNS = (
    "requests", "failed", "input_tokens", "cached_input_tokens", "output_tokens",
    "audio_seconds", "characters", "images", "cost_micros", "cache_hits", "saved_tokens",
    "saved_micros",
)  # fmt: skip
_GROUPS = {"key": "key_id", "model": "model", "day": "day"}


def _by_key(sums: Subquery) -> Select[Any]:
    """Each key's sums with its name, for the keys that made requests."""
    values = [sums.c[name] for name in SUM_COLUMNS]
    return (
        select(sums.c.key_id, ApiKey.name.label("key_name"), *values)
        .join(ApiKey, ApiKey.id == sums.c.key_id)
        .where(sums.c.requests > 0)
        .order_by(sums.c.key_id)
    )


def _by(group: str) -> rollups.Then:
    def report(sums: Subquery) -> Select[Any]:
        values = [sums.c[name] for name in SUM_COLUMNS]
        column = sums.c[_GROUPS[group]]
        return select(column.label(group), *values).where(sums.c.requests > 0).order_by(column)

    return report


def _spend(sums: Subquery) -> Select[Any]:
    return select(sums.c.key_id, sums.c.cost_micros).where(sums.c.cost_micros > 0)


# One function per report, defined once: the statements built with them are reused.
_REPORTS = {"key": _by_key, "model": _by("model"), "day": _by("day")}


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
        """SUM_COLUMNS per key (with its name), model or UTC day, from the rollups."""
        statement, params = rollups.summed(
            self.session, where.start, where.end, tenant_id=self.tenant_id,
            key_id=where.key_id, model=where.model, by=[_GROUPS[group]], then=_REPORTS[group],
        )  # fmt: skip
        # Core, not the ORM's row loading: a report can have a row per key of the tenant.
        result = await (await self.session.connection()).execute(statement, params)
        names = list(map(str, result.keys()))  # plain str: label names are str subclasses
        return [dict(zip(names, row, strict=True)) for row in result.all()]

    async def spend_by_key(self, start: datetime, end: datetime) -> dict[uuid.UUID, int]:
        """Each key's billed spend in [start, end), from the rollups (keys that spent > 0)."""
        statement, params = rollups.summed(
            self.session, start, end, tenant_id=self.tenant_id, by=["key_id"], then=_spend
        )
        rows = await self.session.execute(statement, params)
        return {row[0]: row[1] for row in rows}

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
