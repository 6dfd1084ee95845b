"""Spend caps, behind an interface the atomic Redis reservation will replace.

`SpendCheck` compares what the ledger already holds with each `spend_usd` limit of the key and
refuses (402) once a limit is reached. It is a check, not a reservation: requests in flight at
the same moment can together go past the cap by their own cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import limits as limit_rules
from api.auth.models import ApiKey
from api.errors import BudgetExceeded
from api.kit.money import micros_to_usd
from api.kit.time import utcnow
from api.usage import repository as usage_repository


@dataclass(frozen=True, slots=True)
class Reservation:
    key_id: str
    reserved_micros: int


class BudgetGuard(Protocol):
    async def reserve(self, key: ApiKey, worst_case_micros: int) -> Reservation: ...

    async def settle(self, reservation: Reservation, cost_micros: int) -> None: ...


class SpendCheck:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def reserve(self, key: ApiKey, worst_case_micros: int) -> Reservation:
        spend_limits = [
            limit_rules.Limit.from_json(item)
            for item in key.limits
            if item.get("metric") == "spend_usd"
        ]
        if spend_limits:
            now = utcnow()
            async with self._sessionmaker() as session:
                for limit in spend_limits:
                    since = limit_rules.period_start(limit.period, now)
                    totals = await usage_repository.key_totals(
                        session, key.tenant_id, key.id, since
                    )
                    if totals.cost_micros >= limit.max:
                        raise BudgetExceeded(
                            f"This key has reached its {limit.period} spend limit of "
                            f"${micros_to_usd(limit.max):.2f}."
                        )
        return Reservation(key_id=str(key.id), reserved_micros=worst_case_micros)

    async def settle(self, reservation: Reservation, cost_micros: int) -> None:
        """Nothing to release: the usage event itself is the record of spend."""
