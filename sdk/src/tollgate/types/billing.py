from __future__ import annotations

from datetime import datetime
from typing import Literal

from tollgate.types.shared import TollgateModel


class StripeAccount(TollgateModel):
    """The tenant's Stripe settings, never its secrets."""

    object: Literal["billing.stripe"]
    configured: bool
    livemode: bool | None = None
    secret_key_last4: str | None = None
    currency: str | None = None
    markup_bps: int | None = None
    minimum_charge_cents: int | None = None
    webhook_path: str
    """Where to point the Stripe webhook endpoint (events invoice.paid, invoice.payment_failed)."""
    updated_at: datetime | None = None


class BillingLine(TollgateModel):
    object: Literal["billing.line"]
    key_id: str
    key_name: str
    spend_micros: int
    carried_in_micros: int
    amount_cents: int
    stripe_invoice_item_id: str | None = None


class BillingRecord(TollgateModel):
    """One customer's invoice for the period."""

    object: Literal["billing.record"]
    id: str
    customer_id: str
    state: str
    currency: str
    amount_cents: int
    stripe_invoice_id: str | None = None
    invoice_status: str | None = None
    carried_into_id: str | None = None
    attempts: int
    last_error: str | None = None
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    lines: list[BillingLine]


class BillingRun(TollgateModel):
    object: Literal["billing.run"]
    id: str
    period: str
    currency: str
    markup_bps: int
    status: Literal["complete", "incomplete"]
    customers: int
    invoices: int
    carried_forward: int
    failed: int
    amount_cents: int
    syncs: int
    last_synced_at: datetime | None = None
    created_at: datetime
    records: list[BillingRecord] | None = None
    """Each customer's record (from `sync` and `runs.retrieve`, not `runs.list`)."""


class PlannedLine(TollgateModel):
    key_id: str
    key_name: str
    spend_micros: int
    carried_in_micros: int
    amount_cents: int


class PlannedRecord(TollgateModel):
    customer_id: str
    amount_cents: int
    carried_forward: bool
    lines: list[PlannedLine]


class BillingPlan(TollgateModel):
    """A dry run: what a sync would bill now; nothing written, nothing sent to Stripe."""

    object: Literal["billing.plan"]
    period: str
    currency: str
    markup_bps: int
    amount_cents: int
    already_billed: list[str]
    records: list[PlannedRecord]
