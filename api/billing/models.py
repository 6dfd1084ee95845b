"""Stripe billing (SPEC §5.8): a tenant's Stripe account, and per period one run, one record per
Stripe customer (its invoice, a small state machine) and one line per key (its invoice item).

Every Stripe id is stored before the next Stripe call, and each record and line also notes when
its create call was sent, so a crash anywhere resumes without billing twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, TimestampMixin, UTCDateTime
from api.kit.time import utcnow

# A record's states, in order. `carried_forward`: under Stripe's minimum charge, billed with a
# later period. `paid`, `payment_failed` and `void` follow the invoice through Stripe's webhooks.
PENDING = "pending"
INVOICE_CREATED = "invoice_created"
ITEMS_ADDED = "items_added"
FINALIZED = "finalized"
PAID = "paid"
PAYMENT_FAILED = "payment_failed"
VOID = "void"
CARRIED_FORWARD = "carried_forward"
IN_PROGRESS = (PENDING, INVOICE_CREATED, ITEMS_ADDED)


class StripeAccount(IdMixin, TimestampMixin, Base):
    __tablename__ = "billing_stripe_accounts"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), unique=True
    )
    # Both sealed with api.kit.crypto.SecretBox: Tollgate must read them back.
    secret_key: Mapped[str] = mapped_column(Text)
    webhook_secret: Mapped[str] = mapped_column(Text)
    secret_key_last4: Mapped[str] = mapped_column(String(4))
    livemode: Mapped[bool] = mapped_column(Boolean)
    currency: Mapped[str] = mapped_column(String(3))
    markup_bps: Mapped[int] = mapped_column(Integer)


class BillingRun(IdMixin, TimestampMixin, Base):
    """One per tenant and period; every sync of the period (re-runs too) works on it."""

    __tablename__ = "billing_runs"
    __table_args__ = (UniqueConstraint("tenant_id", "period", name="uq_billing_runs_period"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[str] = mapped_column(String(7))  # "YYYY-MM"
    # Taken from the account when the run starts, so later changes never alter its amounts.
    currency: Mapped[str] = mapped_column(String(3))
    markup_bps: Mapped[int] = mapped_column(Integer)
    syncs: Mapped[int] = mapped_column(Integer, default=0)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A sync holds the run until then, so two syncs of one period never interleave.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BillingRecord(IdMixin, TimestampMixin, Base):
    """One Stripe customer's invoice for one period."""

    __tablename__ = "billing_records"
    __table_args__ = (
        UniqueConstraint("tenant_id", "customer_id", "period", name="uq_billing_records_once"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_runs.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[str] = mapped_column(String(7))
    customer_id: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(24), default=PENDING)
    currency: Mapped[str] = mapped_column(String(3))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    invoice_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    invoice_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A carried-forward record names the record of the later period that billed its amounts.
    carried_into_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BillingLine(IdMixin, Base):
    """One key's spend on a record: one Stripe invoice item."""

    __tablename__ = "billing_lines"
    __table_args__ = (UniqueConstraint("record_id", "key_id", name="uq_billing_lines_key"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    record_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("billing_records.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column()
    key_name: Mapped[str] = mapped_column(String(200))
    spend_micros: Mapped[int] = mapped_column(BigInteger)  # the ledger's sum for the period
    carried_in_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    stripe_invoice_item_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    item_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class StripeEvent(IdMixin, Base):
    """Each Stripe webhook event handled, so a replay is acknowledged and ignored."""

    __tablename__ = "billing_stripe_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_billing_stripe_events_event"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(64))
    invoice_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
