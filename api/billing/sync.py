"""Month-end sync: each Stripe customer's metered spend for a period becomes one invoice, once.

Per (tenant, customer, period) a `BillingRecord` walks pending → invoice_created → items_added
→ finalized (then paid / payment_failed through webhooks). This module is the one orchestrator
that commits as it goes, step by step, like the worker's job wrapper would: every Stripe id is
committed before the next Stripe call, and the moment a create call is sent is committed before
it is sent. A re-run (or a run after a crash) starts each record where it stopped; where a create
call may have reached Stripe without its answer being stored, it first looks for what it made
(by metadata), and the deterministic idempotency key on every call covers Stripe's side.

A Stripe error on one customer is recorded on that customer's record and the run goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import stripe
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.repository import ApiKeyRepository
from api.billing.amounts import MINIMUM_CHARGE, line_cents, parse_period
from api.billing.models import (
    CARRIED_FORWARD,
    FINALIZED,
    IN_PROGRESS,
    INVOICE_CREATED,
    ITEMS_ADDED,
    PENDING,
    BillingLine,
    BillingRecord,
    BillingRun,
)
from api.billing.repository import (
    BillingLineRepository,
    BillingRecordRepository,
    BillingRunRepository,
    StripeAccountRepository,
    tenants_with_stripe_unscoped,
)
from api.billing.stripe_gateway import (
    KEY_META,
    RECORD_META,
    GatewayFactory,
    ItemRequest,
    StripeGateway,
)
from api.errors import AppError, Conflict, StripeNotConfigured
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.usage.repository import UsageRepository

# A sync holds its period for this long, renewed at every customer; a killed sync's hold lapses.
LEASE = timedelta(minutes=5)

Progress = Callable[[int, int], None]  # (customers done, customers in all)


@dataclass(slots=True)
class PlannedLine:
    key_id: uuid.UUID
    key_name: str
    spend_micros: int = 0
    carried_in_micros: int = 0
    amount_cents: int = 0


@dataclass(slots=True)
class PlannedRecord:
    customer_id: str
    lines: list[PlannedLine] = field(default_factory=list)
    carried_from: list[uuid.UUID] = field(default_factory=list)
    amount_cents: int = 0
    carried_forward: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    period: str
    currency: str
    markup_bps: int
    records: list[PlannedRecord]
    already_billed: list[str]


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    run_id: uuid.UUID | None  # None for a dry run
    plan: Plan
    failed: dict[str, str]  # customer → the Stripe error that stopped it this time


async def sync_period(
    sessionmaker: async_sessionmaker[AsyncSession],
    box: SecretBox,
    gateways: GatewayFactory,
    tenant_id: uuid.UUID,
    period: str,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> SyncOutcome:
    now = now or utcnow()
    start, end = parse_period(period, now)
    async with sessionmaker() as session, session.begin():
        account = await StripeAccountRepository(session, tenant_id).current()
        if account is None:
            raise StripeNotConfigured()
        if dry_run:
            plan = await _plan(session, tenant_id, period, start, end, account.currency,
                               account.markup_bps)  # fmt: skip
            return SyncOutcome(run_id=None, plan=plan, failed={})
        secret_key = box.open(account.secret_key)
        run = await _hold_run(session, tenant_id, period, account.currency, account.markup_bps, now)
        plan = await _plan(session, tenant_id, period, start, end, run.currency, run.markup_bps)
        await _write(session, tenant_id, run, plan)
        records = await BillingRecordRepository(session, tenant_id).for_run(run.id)
        todo = [r.id for r in records if r.state in IN_PROGRESS]
    failed: dict[str, str] = {}
    gateway = gateways(secret_key)
    steps = _Steps(sessionmaker, gateway, tenant_id, period, start, end)
    try:
        for done, record_id in enumerate(todo, start=1):
            customer, error = await steps.advance(record_id)
            if error is not None:
                failed[customer] = error
            await _renew(sessionmaker, tenant_id, run.id)
            if progress is not None:
                progress(done, len(todo))
    except Exception:
        await _release(sessionmaker, tenant_id, run.id, now)
        raise
    finally:
        await gateway.aclose()
    # Not in `finally`: a sync that dies (a kill, a cancelled task) leaves its hold to lapse.
    await _release(sessionmaker, tenant_id, run.id, now)
    return SyncOutcome(run_id=run.id, plan=plan, failed=failed)


async def _hold_run(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    period: str,
    currency: str,
    markup_bps: int,
    now: datetime,
) -> BillingRun:
    runs = BillingRunRepository(session, tenant_id)
    await runs.create_once(period, currency, markup_bps)
    run = await runs.for_period(period)
    assert run is not None  # created above, or by a concurrent sync
    if not await runs.take_lease(run.id, now, now + LEASE):
        raise Conflict(
            f"A sync of {period} is running, or was interrupted less than "
            f"{int(LEASE.total_seconds() // 60)} minutes ago; try again later.",
            param="period",
        )
    return run


async def _renew(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, run_id: uuid.UUID
) -> None:
    async with sessionmaker() as session, session.begin():
        run = await BillingRunRepository(session, tenant_id).get(run_id)
        if run is not None:
            run.lease_until = utcnow() + LEASE


async def _release(
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    now: datetime,
) -> None:
    async with sessionmaker() as session, session.begin():
        run = await BillingRunRepository(session, tenant_id).get(run_id)
        if run is not None:
            run.lease_until = None
            run.syncs += 1
            run.last_synced_at = run.updated_at = now


async def _plan(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    period: str,
    start: datetime,
    end: datetime,
    currency: str,
    markup_bps: int,
) -> Plan:
    """What the period bills: each linked key's ledger spend, plus what earlier periods carried
    forward, for every customer that has no record for the period yet."""
    records = BillingRecordRepository(session, tenant_id)
    billed = await records.customers_billed(period)
    spend = await UsageRepository(session, tenant_id).spend_by_key(start, end)
    by_customer: dict[str, PlannedRecord] = {}

    def line_for(customer: str, key_id: uuid.UUID, key_name: str) -> PlannedLine:
        record = by_customer.setdefault(customer, PlannedRecord(customer_id=customer))
        for line in record.lines:
            if line.key_id == key_id:
                return line
        record.lines.append(PlannedLine(key_id=key_id, key_name=key_name))
        return record.lines[-1]

    for key in await ApiKeyRepository(session, tenant_id).by_ids(list(spend)):
        if key.stripe_customer_id and key.stripe_customer_id not in billed:
            line_for(key.stripe_customer_id, key.id, key.name).spend_micros += spend[key.id]
    carried = [r for r in await records.carried_open(period) if r.customer_id not in billed]
    carried_lines = await BillingLineRepository(session, tenant_id).for_records(
        [r.id for r in carried]
    )
    customer_of = {r.id: r.customer_id for r in carried}
    for old in carried_lines:
        line = line_for(customer_of[old.record_id], old.key_id, old.key_name)
        line.carried_in_micros += old.spend_micros + old.carried_in_micros
    for old_record in carried:
        by_customer[old_record.customer_id].carried_from.append(old_record.id)
    minimum = MINIMUM_CHARGE.get(currency, 50)
    for planned in by_customer.values():
        planned.lines.sort(key=lambda line: (line.key_name, str(line.key_id)))
        for line in planned.lines:
            line.amount_cents = line_cents(line.spend_micros + line.carried_in_micros, markup_bps)
        planned.amount_cents = sum(line.amount_cents for line in planned.lines)
        planned.carried_forward = planned.amount_cents < minimum
    ordered = sorted(by_customer.values(), key=lambda r: r.customer_id)
    return Plan(period, currency, markup_bps, ordered, sorted(billed))


async def _write(session: AsyncSession, tenant_id: uuid.UUID, run: BillingRun, plan: Plan) -> None:
    records = BillingRecordRepository(session, tenant_id)
    created = []
    for planned in plan.records:
        record = BillingRecord(
            id=uuid.uuid4(), tenant_id=tenant_id, run_id=run.id, period=plan.period,
            customer_id=planned.customer_id, currency=run.currency,
            amount_cents=planned.amount_cents, attempts=0,
            state=CARRIED_FORWARD if planned.carried_forward else PENDING,
        )  # fmt: skip
        session.add(record)
        created.append((record, planned))
    await session.flush()  # records before their lines (no ORM relationship orders them)
    for record, planned in created:
        for line in planned.lines:
            session.add(
                BillingLine(
                    id=uuid.uuid4(),
                    tenant_id=tenant_id,
                    record_id=record.id,
                    key_id=line.key_id,
                    key_name=line.key_name[:200],
                    spend_micros=line.spend_micros,
                    carried_in_micros=line.carried_in_micros,
                    amount_cents=line.amount_cents,
                )
            )
        for old_id in planned.carried_from:
            old = await records.get(old_id)
            if old is not None:
                old.carried_into_id = record.id
    await session.flush()


class _Steps:
    """One record's way through the state machine, one committed step at a time."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: StripeGateway,
        tenant_id: uuid.UUID,
        period: str,
        start: datetime,
        end: datetime,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._gateway = gateway
        self._tenant_id = tenant_id
        self._period = period
        self._start, self._end = int(start.timestamp()), int(end.timestamp())

    def _key(self, record: BillingRecord, kind: str) -> str:
        """Deterministic, so a retried or resumed call is the same request to Stripe."""
        return f"tollgate:{self._tenant_id}:{self._period}:{record.customer_id}:{kind}"

    async def advance(self, record_id: uuid.UUID) -> tuple[str, str | None]:
        """Take the record as far as it goes; returns its customer and the error, if any."""
        customer = ""
        try:
            while True:
                async with self._sessionmaker() as session, session.begin():
                    record = await BillingRecordRepository(session, self._tenant_id).get(record_id)
                    assert record is not None
                    customer, state = record.customer_id, record.state
                if state == PENDING:
                    await self._create_invoice(record)
                elif state == INVOICE_CREATED:
                    await self._add_items(record)
                elif state == ITEMS_ADDED:
                    await self._finalize(record)
                else:
                    return customer, None
        except stripe.StripeError as exc:
            message = f"{type(exc).__name__}: {exc.user_message or exc}"[:500]
            async with self._sessionmaker() as session, session.begin():
                stored = await BillingRecordRepository(session, self._tenant_id).get(record_id)
                if stored is not None:
                    stored.attempts += 1
                    stored.last_error = message
                    stored.updated_at = utcnow()
            return customer, message

    async def _save(self, record_id: uuid.UUID, **values: object) -> None:
        async with self._sessionmaker() as session, session.begin():
            record = await BillingRecordRepository(session, self._tenant_id).get(record_id)
            assert record is not None
            for name, value in values.items():
                setattr(record, name, value)
            record.updated_at = utcnow()

    async def _create_invoice(self, record: BillingRecord) -> None:
        invoice_id = None
        if record.invoice_requested_at is not None:  # an earlier attempt may have reached Stripe
            invoice_id = await self._gateway.find_invoice(record.customer_id, str(record.id))
        if invoice_id is None:
            await self._save(record.id, invoice_requested_at=utcnow())
            invoice_id = await self._gateway.create_invoice(
                customer=record.customer_id,
                currency=record.currency,
                description=f"AI usage {self._period}",
                metadata={
                    RECORD_META: str(record.id),
                    "tollgate_tenant_id": str(self._tenant_id),
                    "tollgate_period": self._period,
                },
                idempotency_key=self._key(record, "invoice"),
            )
        await self._save(record.id, stripe_invoice_id=invoice_id, state=INVOICE_CREATED,
                         invoice_status="draft", last_error=None)  # fmt: skip

    async def _add_items(self, record: BillingRecord) -> None:
        invoice_id = record.stripe_invoice_id
        assert invoice_id is not None
        async with self._sessionmaker() as session, session.begin():
            lines = await BillingLineRepository(session, self._tenant_id).for_records([record.id])
        existing: dict[str, str] = {}
        if any(ln.item_requested_at and not ln.stripe_invoice_item_id for ln in lines):
            existing = await self._gateway.invoice_item_ids(invoice_id)
        for line in lines:
            if line.stripe_invoice_item_id is not None:
                continue
            item_id = existing.get(str(line.key_id))
            if item_id is None:
                await self._save_line(line.id, item_requested_at=utcnow())
                item_id = await self._gateway.create_invoice_item(
                    ItemRequest(
                        customer=record.customer_id, invoice=invoice_id,
                        currency=record.currency, amount_cents=line.amount_cents,
                        description=f"{line.key_name}: AI usage {self._period}",
                        period_start=self._start, period_end=self._end,
                        metadata={
                            KEY_META: str(line.key_id), RECORD_META: str(record.id),
                            "tollgate_period": self._period,
                            "spend_micros": str(line.spend_micros),
                            "carried_in_micros": str(line.carried_in_micros),
                        },
                        idempotency_key=self._key(record, f"item:{line.key_id}"),
                    )
                )  # fmt: skip
            await self._save_line(line.id, stripe_invoice_item_id=item_id)
        await self._save(record.id, state=ITEMS_ADDED, last_error=None)

    async def _save_line(self, line_id: uuid.UUID, **values: object) -> None:
        async with self._sessionmaker() as session, session.begin():
            line = await BillingLineRepository(session, self._tenant_id).get(line_id)
            assert line is not None
            for name, value in values.items():
                setattr(line, name, value)

    async def _finalize(self, record: BillingRecord) -> None:
        assert record.stripe_invoice_id is not None
        status = await self._gateway.finalize_invoice(
            record.stripe_invoice_id, idempotency_key=self._key(record, "finalize")
        )
        await self._save(record.id, state=FINALIZED, invoice_status=status,
                         finalized_at=utcnow(), last_error=None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TenantResult:
    tenant_id: uuid.UUID
    outcome: SyncOutcome | None
    error: str | None  # why the tenant's sync did not run (another sync holds it, …)


async def sync_tenants(
    sessionmaker: async_sessionmaker[AsyncSession],
    box: SecretBox,
    gateways: GatewayFactory,
    period: str,
    *,
    tenant_ids: list[uuid.UUID] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[uuid.UUID], Progress] | None = None,
) -> list[TenantResult]:
    """Sync `period` for the given tenants, or every tenant with Stripe configured; one
    tenant's refusal (e.g. a sync already running) does not stop the others."""
    now = now or utcnow()
    parse_period(period, now)  # a bad period fails once, before any tenant
    if tenant_ids is None:
        async with sessionmaker() as session:
            tenant_ids = await tenants_with_stripe_unscoped(session)
    results = []
    for tenant_id in tenant_ids:
        try:
            outcome = await sync_period(
                sessionmaker, box, gateways, tenant_id, period, dry_run=dry_run, now=now,
                progress=progress(tenant_id) if progress else None,
            )  # fmt: skip
        except AppError as exc:
            results.append(TenantResult(tenant_id, None, exc.message))
        else:
            results.append(TenantResult(tenant_id, outcome, None))
    return results
