"""The Stripe webhook handler: events signed with stripe.WebhookSignature.generate_signature_header
(replayed, out of order, wrong secret, stale timestamp), against a SQLite file and a fake Stripe
gateway (the process boundary)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import pytest
import stripe
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.models import ApiKey
from api.billing import service
from api.billing.models import FINALIZED, BillingRecord, BillingRun, StripeAccount
from api.billing.stripe_gateway import InvoiceState, StripeGateway
from api.db import create_engine, create_sessionmaker
from api.errors import InvalidSignature, NotFound
from api.kit.crypto import SecretBox
from api.models import Base
from api.tenant.models import Tenant

WEBHOOK_SECRET = "whsec_unit_test_secret"
BOX = SecretBox("u" * 48)
CUSTOMER = "cus_unit"


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None):
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, at)
    return payload.encode(), header


def event(type_: str, invoice: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:14]}",
        "object": "event",
        "type": type_,
        "data": {"object": {"id": invoice, "object": "invoice", "customer": CUSTOMER}},
    }


class FakeStripe:
    """What the gateway would read back from Stripe: the invoice's current status."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.reads = 0

    def __call__(self, secret_key: str) -> StripeGateway:
        assert secret_key == "sk_test_unit"
        gateway = MagicMock(spec=StripeGateway)
        gateway.retrieve_invoice = AsyncMock(side_effect=self._retrieve)
        gateway.aclose = AsyncMock()
        return gateway

    async def _retrieve(self, invoice: str) -> InvoiceState:
        self.reads += 1
        return InvoiceState(invoice, self.status[invoice], CUSTOMER, {})


@pytest.fixture
async def sessionmaker(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unit.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def world(sessionmaker) -> dict[str, Any]:
    """A tenant with Stripe configured, two keys of one customer and two finalized invoices."""
    tenant_id, run_id = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        session.add(Tenant(id=tenant_id, name="Acme"))
        await session.flush()
        session.add(StripeAccount(
            tenant_id=tenant_id, secret_key=BOX.seal("sk_test_unit"),
            webhook_secret=BOX.seal(WEBHOOK_SECRET), secret_key_last4="unit", livemode=False,
            currency="usd", markup_bps=0,
        ))  # fmt: skip
        session.add(BillingRun(id=run_id, tenant_id=tenant_id, period="2026-09", currency="usd",
                               markup_bps=0, syncs=1))  # fmt: skip
        keys = [uuid.uuid4(), uuid.uuid4()]
        for key_id in keys:
            session.add(ApiKey(
                id=key_id, tenant_id=tenant_id, name="user", scope="standard", test=False,
                prefix="qlk_live_", last_four="abcd", limits=[], metadata_={},
                stripe_customer_id=CUSTOMER,
            ))  # fmt: skip
        await session.flush()
        for period, invoice in (("2026-09", "in_sep"), ("2026-10", "in_oct")):
            session.add(BillingRecord(
                tenant_id=tenant_id, run_id=run_id, period=period, customer_id=CUSTOMER,
                state=FINALIZED, currency="usd", amount_cents=500, stripe_invoice_id=invoice,
                invoice_status="open", attempts=0,
            ))  # fmt: skip
    return {"tenant_id": tenant_id, "keys": keys}


async def deliver(sessionmaker, fake: FakeStripe, tenant_id, payload, header):
    async with sessionmaker() as session, session.begin():
        return await service.handle_stripe_event(session, BOX, fake, tenant_id, payload, header)


async def suspended(sessionmaker, keys) -> list[bool]:
    async with sessionmaker() as session:
        return [(await session.get(ApiKey, k)).suspended_at is not None for k in keys]


async def state_of(sessionmaker, invoice: str) -> str:
    async with sessionmaker() as session:
        rows = (await session.execute(
            BillingRecord.__table__.select().where(BillingRecord.stripe_invoice_id == invoice)
        )).all()  # fmt: skip
        return str(rows[0].state)


class TestStripeWebhook:
    async def test_payment_failed_suspends_and_paid_restores(self, sessionmaker, world):
        fake = FakeStripe()
        fake.status["in_sep"] = "open"
        outcome = await deliver(sessionmaker, fake, world["tenant_id"],
                                *signed(event("invoice.payment_failed", "in_sep")))  # fmt: skip
        assert outcome.handled
        assert sorted(outcome.suspended) == sorted(world["keys"])
        assert await suspended(sessionmaker, world["keys"]) == [True, True]
        assert await state_of(sessionmaker, "in_sep") == "payment_failed"
        fake.status["in_sep"] = "paid"
        outcome = await deliver(sessionmaker, fake, world["tenant_id"],
                                *signed(event("invoice.paid", "in_sep")))  # fmt: skip
        assert sorted(outcome.restored) == sorted(world["keys"])
        assert await suspended(sessionmaker, world["keys"]) == [False, False]
        assert await state_of(sessionmaker, "in_sep") == "paid"

    async def test_payment_succeeded_is_read_as_paid(self, sessionmaker, world):
        fake = FakeStripe()
        fake.status["in_sep"] = "paid"
        await deliver(sessionmaker, fake, world["tenant_id"],
                      *signed(event("invoice.payment_succeeded", "in_sep")))  # fmt: skip
        assert await state_of(sessionmaker, "in_sep") == "paid"

    async def test_keys_stay_suspended_while_another_invoice_is_unpaid(self, sessionmaker, world):
        fake = FakeStripe()
        fake.status.update(in_sep="open", in_oct="open")
        for invoice in ("in_sep", "in_oct"):
            await deliver(sessionmaker, fake, world["tenant_id"],
                          *signed(event("invoice.payment_failed", invoice)))  # fmt: skip
        fake.status["in_sep"] = "paid"
        outcome = await deliver(sessionmaker, fake, world["tenant_id"],
                                *signed(event("invoice.paid", "in_sep")))  # fmt: skip
        assert outcome.restored == []
        assert await suspended(sessionmaker, world["keys"]) == [True, True]
        fake.status["in_oct"] = "paid"
        await deliver(sessionmaker, fake, world["tenant_id"],
                      *signed(event("invoice.paid", "in_oct")))  # fmt: skip
        assert await suspended(sessionmaker, world["keys"]) == [False, False]

    async def test_a_replayed_event_is_acknowledged_and_ignored(self, sessionmaker, world):
        fake = FakeStripe()
        fake.status["in_sep"] = "open"
        failed = event("invoice.payment_failed", "in_sep", "evt_replayed")
        await deliver(sessionmaker, fake, world["tenant_id"], *signed(failed))
        fake.status["in_sep"] = "paid"
        await deliver(sessionmaker, fake, world["tenant_id"],
                      *signed(event("invoice.paid", "in_sep")))  # fmt: skip
        reads = fake.reads
        again = await deliver(sessionmaker, fake, world["tenant_id"], *signed(failed))
        assert again.duplicate
        assert not again.handled
        assert fake.reads == reads  # not even asked
        assert await suspended(sessionmaker, world["keys"]) == [False, False]

    async def test_a_late_failure_after_payment_does_not_suspend(self, sessionmaker, world):
        """Out of order: `paid` arrives first, then the earlier `payment_failed`; the invoice
        as Stripe has it now (paid) decides."""
        fake = FakeStripe()
        fake.status["in_sep"] = "paid"
        await deliver(sessionmaker, fake, world["tenant_id"],
                      *signed(event("invoice.paid", "in_sep")))  # fmt: skip
        late = await deliver(sessionmaker, fake, world["tenant_id"],
                             *signed(event("invoice.payment_failed", "in_sep")))  # fmt: skip
        assert late.suspended == []
        assert await state_of(sessionmaker, "in_sep") == "paid"
        assert await suspended(sessionmaker, world["keys"]) == [False, False]

    async def test_a_late_paid_event_after_a_retry_failed_is_read_fresh(self, sessionmaker, world):
        """Out of order the other way: the invoice is open again, so a stale `paid` (whose
        invoice status reads open) restores nothing."""
        fake = FakeStripe()
        fake.status["in_sep"] = "open"
        await deliver(sessionmaker, fake, world["tenant_id"],
                      *signed(event("invoice.payment_failed", "in_sep")))  # fmt: skip
        stale = await deliver(sessionmaker, fake, world["tenant_id"],
                              *signed(event("invoice.paid", "in_sep")))  # fmt: skip
        assert stale.restored == []
        assert await suspended(sessionmaker, world["keys"]) == [True, True]

    async def test_wrong_secret_is_refused(self, sessionmaker, world):
        fake = FakeStripe()
        fake.status["in_sep"] = "open"
        payload, header = signed(event("invoice.payment_failed", "in_sep"), "whsec_other")
        with pytest.raises(InvalidSignature):
            await deliver(sessionmaker, fake, world["tenant_id"], payload, header)
        assert await suspended(sessionmaker, world["keys"]) == [False, False]
        assert fake.reads == 0

    async def test_stale_timestamp_is_refused(self, sessionmaker, world):
        fake = FakeStripe()
        old = int(time.time()) - 301
        payload, header = signed(event("invoice.payment_failed", "in_sep"), at=old)
        with pytest.raises(InvalidSignature, match="tolerance"):
            await deliver(sessionmaker, fake, world["tenant_id"], payload, header)

    async def test_tampered_body_and_missing_header_are_refused(self, sessionmaker, world):
        fake = FakeStripe()
        payload, header = signed(event("invoice.payment_failed", "in_sep"))
        with pytest.raises(InvalidSignature):
            await deliver(sessionmaker, fake, world["tenant_id"], payload + b" ", header)
        with pytest.raises(InvalidSignature):
            await deliver(sessionmaker, fake, world["tenant_id"], payload, None)

    async def test_other_events_and_foreign_invoices_are_acknowledged(self, sessionmaker, world):
        fake = FakeStripe()
        other = await deliver(sessionmaker, fake, world["tenant_id"],
                              *signed(event("customer.created", "in_sep")))  # fmt: skip
        foreign = await deliver(sessionmaker, fake, world["tenant_id"],
                                *signed(event("invoice.payment_failed", "in_notours")))  # fmt: skip
        assert not other.handled
        assert not foreign.handled
        assert fake.reads == 0
        assert await suspended(sessionmaker, world["keys"]) == [False, False]

    async def test_a_tenant_without_stripe_is_404(self, sessionmaker, world):
        with pytest.raises(NotFound):
            await deliver(sessionmaker, FakeStripe(), uuid.uuid4(),
                          *signed(event("invoice.paid", "in_sep")))  # fmt: skip


def test_events_signed_by_stripe_python_verify():
    payload, header = signed(event("invoice.paid", "in_x"))
    assert service.verify_event(payload, header, WEBHOOK_SECRET)["type"] == "invoice.paid"
