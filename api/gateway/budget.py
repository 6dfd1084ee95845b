"""Spend caps, behind an interface the atomic reservation will replace.

`SpendCheck` keeps one counter per key and period (day, month, total) in the counter store,
seeded once from the ledger and increased as requests finish, and refuses (402) a request
whose key has reached a `spend_usd` limit. It is a check, not a reservation: requests in flight
at the same moment can together pass the cap by their own cost. Before seeding it waits for
this process's pending usage events to reach the ledger; a request that finishes during the
seed itself can still go uncounted until the counter expires.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import limits as limit_rules
from api.auth.models import ApiKey
from api.errors import BudgetExceeded
from api.kit.counters import CounterStore
from api.kit.money import micros_to_usd
from api.kit.time import utcnow
from api.usage import repository as usage_repository

logger = logging.getLogger("tollgate.budget")

_TTL_SECONDS = {"day": 2 * 86_400, "month": 32 * 86_400, "total": 400 * 86_400}


@dataclass(frozen=True, slots=True)
class Reservation:
    key_id: uuid.UUID
    reserved_micros: int
    tracked: bool  # the key has spend limits, so its counters are kept


class BudgetGuard(Protocol):
    async def reserve(self, key: ApiKey, worst_case_micros: int) -> Reservation: ...

    def settle(self, reservation: Reservation, cost_micros: int) -> None:
        """Called once per request, from synchronous code (stream finalisers included)."""
        ...

    async def limits_changed(self, key_id: uuid.UUID) -> None:
        """A key's limits changed: recount from the ledger on its next request."""
        ...


def counter_names(key_id: uuid.UUID, at: datetime) -> dict[limit_rules.Period, str]:
    """The key's spend counter for each period containing `at` (calendar UTC)."""
    base = f"spend:{key_id}:"
    month = f"{at.year:04d}{at.month:02d}"
    return {"day": f"{base}d{month}{at.day:02d}", "month": f"{base}m{month}", "total": f"{base}t"}


class SpendCheck:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        counters: CounterStore,
        flush_ledger: Callable[[], Awaitable[None]],
    ) -> None:
        self._sessionmaker = sessionmaker
        self._counters = counters
        self._flush_ledger = flush_ledger
        self._pending: set[asyncio.Task[None]] = set()

    async def reserve(self, key: ApiKey, worst_case_micros: int) -> Reservation:
        limits = [
            limit_rules.Limit.from_json(item)
            for item in key.limits
            if item.get("metric") == "spend_usd"
        ]
        if limits:
            now = utcnow()
            by_period = counter_names(key.id, now)
            names = [by_period[limit.period] for limit in limits]
            spent = await self._counters.read(names)
            for limit, name, value in zip(limits, names, spent, strict=True):
                if value is None:
                    value = await self._seed(key, limit.period, name, now)
                if value >= limit.max:
                    raise BudgetExceeded(
                        f"This key has reached its {limit.period} spend limit of "
                        f"${micros_to_usd(limit.max):.2f}."
                    )
        return Reservation(key.id, worst_case_micros, tracked=bool(limits))

    async def _seed(self, key: ApiKey, period: limit_rules.Period, name: str, now: datetime) -> int:
        since = limit_rules.period_start(period, now)
        await self._flush_ledger()
        async with self._sessionmaker() as session:
            totals = await usage_repository.key_totals(session, key.tenant_id, key.id, since)
        return await self._counters.seed(name, totals.cost_micros, _TTL_SECONDS[period])

    def settle(self, reservation: Reservation, cost_micros: int) -> None:
        if cost_micros <= 0 or not reservation.tracked:
            return
        names = counter_names(reservation.key_id, utcnow())
        task = asyncio.get_running_loop().create_task(
            self._counters.add(
                dict.fromkeys(names.values(), cost_micros),
                {name: _TTL_SECONDS[p] for p, name in names.items()},
            )
        )
        self._pending.add(task)
        task.add_done_callback(self._done)

    async def limits_changed(self, key_id: uuid.UUID) -> None:
        try:
            await self._counters.delete(list(counter_names(key_id, utcnow()).values()))
        except Exception:  # the change is committed; the counters expire on their own
            logger.exception("could not reset the spend counters of key %s", key_id)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("updating spend counters failed", exc_info=task.exception())

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
