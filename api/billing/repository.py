from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.billing.models import (
    CARRIED_FORWARD,
    PAYMENT_FAILED,
    BillingLine,
    BillingRecord,
    BillingRun,
    StripeAccount,
    StripeEvent,
)
from api.db import insert_ignoring_conflicts
from api.kit.repository import TenantRepository
from api.kit.time import utcnow


def _all(result: Any) -> list[Any]:
    """Rows of a `base()` query (typed as 1-tuples by the generic base)."""
    return list(result.scalars())


def _first(result: Any) -> Any:
    return result.scalars().first()


class StripeAccountRepository(TenantRepository[StripeAccount]):
    model = StripeAccount

    async def current(self) -> StripeAccount | None:
        account: StripeAccount | None = _first(await self.session.execute(self.base()))
        return account


async def tenants_with_stripe_unscoped(session: AsyncSession) -> list[uuid.UUID]:
    """The month-end job bills every tenant that configured Stripe."""
    result = await session.execute(
        select(StripeAccount.tenant_id).order_by(StripeAccount.tenant_id)
    )
    return list(result.scalars())


class BillingRunRepository(TenantRepository[BillingRun]):
    model = BillingRun

    async def for_period(self, period: str) -> BillingRun | None:
        statement = self.base().where(BillingRun.period == period)
        run: BillingRun | None = _first(await self.session.execute(statement))
        return run

    async def create_once(self, period: str, currency: str, markup_bps: int) -> None:
        """Insert the period's run unless a concurrent sync just did."""
        now = utcnow()
        statement = insert_ignoring_conflicts(self.session, BillingRun).values(
            id=uuid.uuid4(), tenant_id=self.tenant_id, period=period, currency=currency,
            markup_bps=markup_bps, syncs=0, created_at=now, updated_at=now,
        )  # fmt: skip
        await self.session.execute(statement)

    async def take_lease(self, run_id: uuid.UUID, now: datetime, until: datetime) -> bool:
        """Hold the run until `until`, unless another sync holds it now."""
        result = await self.session.execute(
            update(BillingRun)
            .where(
                BillingRun.tenant_id == self.tenant_id,
                BillingRun.id == run_id,
                or_(BillingRun.lease_until.is_(None), BillingRun.lease_until < now),
            )
            .values(lease_until=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


class BillingRecordRepository(TenantRepository[BillingRecord]):
    model = BillingRecord

    async def for_run(self, run_id: uuid.UUID) -> list[BillingRecord]:
        statement = (
            self.base()
            .where(BillingRecord.run_id == run_id)
            .order_by(BillingRecord.customer_id, BillingRecord.id)
        )
        return _all(await self.session.execute(statement))

    async def for_runs(self, run_ids: Sequence[uuid.UUID]) -> list[BillingRecord]:
        if not run_ids:
            return []
        statement = self.base().where(BillingRecord.run_id.in_(run_ids))
        return _all(await self.session.execute(statement))

    async def customers_billed(self, period: str) -> set[str]:
        statement = select(BillingRecord.customer_id).where(
            BillingRecord.tenant_id == self.tenant_id, BillingRecord.period == period
        )
        return set((await self.session.execute(statement)).scalars())

    async def carried_open(self, before_period: str) -> list[BillingRecord]:
        """Amounts carried forward from earlier periods, not yet billed with a later one."""
        statement = self.base().where(
            BillingRecord.state == CARRIED_FORWARD,
            BillingRecord.carried_into_id.is_(None),
            BillingRecord.period < before_period,
        )
        return _all(await self.session.execute(statement))

    async def by_invoice(self, invoice_id: str) -> BillingRecord | None:
        statement = self.base().where(BillingRecord.stripe_invoice_id == invoice_id)
        record: BillingRecord | None = _first(await self.session.execute(statement))
        return record

    async def customer_has_unpaid(self, customer_id: str) -> bool:
        statement = self.base().where(
            BillingRecord.customer_id == customer_id, BillingRecord.state == PAYMENT_FAILED
        )
        return (await self.session.execute(statement.limit(1))).first() is not None


class BillingLineRepository(TenantRepository[BillingLine]):
    model = BillingLine

    async def for_records(self, record_ids: Sequence[uuid.UUID]) -> list[BillingLine]:
        if not record_ids:
            return []
        statement = (
            self.base()
            .where(BillingLine.record_id.in_(record_ids))
            .order_by(BillingLine.key_name, BillingLine.key_id)
        )
        return _all(await self.session.execute(statement))


class StripeEventRepository(TenantRepository[StripeEvent]):
    model = StripeEvent

    async def record_once(self, event_id: str, type_: str, invoice_id: str | None) -> bool:
        """False when the event was handled before (Stripe delivers at least once)."""
        statement = insert_ignoring_conflicts(self.session, StripeEvent).values(
            id=uuid.uuid4(), tenant_id=self.tenant_id, event_id=event_id, type=type_[:64],
            invoice_id=invoice_id, received_at=utcnow(),
        )  # fmt: skip
        result = await self.session.execute(statement.returning(StripeEvent.id))
        return result.scalar_one_or_none() is not None
