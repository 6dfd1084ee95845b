"""Billing: a tenant's Stripe account, the runs that billed its periods, and Stripe's webhooks.

The month-end sync itself is `api.billing.sync` (it commits step by step); everything here
follows the usual rule: the caller's session commits.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import stripe
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.repository import ApiKeyRepository
from api.billing.amounts import MINIMUM_CHARGE
from api.billing.models import (
    CARRIED_FORWARD,
    FINALIZED,
    IN_PROGRESS,
    PAID,
    PAYMENT_FAILED,
    VOID,
    BillingRecord,
    BillingRun,
    StripeAccount,
)
from api.billing.repository import (
    BillingLineRepository,
    BillingRecordRepository,
    BillingRunRepository,
    StripeAccountRepository,
    StripeEventRepository,
)
from api.billing.schemas import (
    LineRead,
    RecordRead,
    RunRead,
    StripeAccountRead,
    StripeAccountUpdate,
)
from api.billing.stripe_gateway import GatewayFactory
from api.billing.sync import Plan
from api.errors import InvalidRequest, InvalidSignature, NotFound, UpstreamError
from api.kit.crypto import SecretBox
from api.kit.pagination import Page
from api.kit.time import isoformat, utcnow
from api.kit.webhook_client import create_webhook_client, refused
from api.kit.webhooks import post_signed
from api.tenant.models import Tenant

logger = logging.getLogger("tollgate.billing")

SIGNATURE_TOLERANCE_SECONDS = 300
# invoice.payment_succeeded is the older name of invoice.paid (and what some fakes still send).
FAILED_EVENTS = frozenset({"invoice.payment_failed"})
PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
SETTLING_EVENTS = frozenset({"invoice.voided", "invoice.marked_uncollectible"})
HANDLED_EVENTS = FAILED_EVENTS | PAID_EVENTS | SETTLING_EVENTS
NOTIFY_RETRY_DELAYS_SECONDS = (0.0, 1.0, 4.0)


def webhook_path(tenant_id: uuid.UUID) -> str:
    return f"/v1/billing/stripe/webhook/{tenant_id}"


# --- the tenant's Stripe account ---------------------------------------------------------


async def put_account(
    session: AsyncSession, box: SecretBox, tenant_id: uuid.UUID, data: StripeAccountUpdate
) -> StripeAccount:
    repository = StripeAccountRepository(session, tenant_id)
    account = await repository.current()
    if account is None:
        account = StripeAccount(id=uuid.uuid4(), tenant_id=tenant_id)
        session.add(account)
    account.secret_key = box.seal(data.secret_key)
    account.webhook_secret = box.seal(data.webhook_secret)
    account.secret_key_last4 = data.secret_key[-4:]
    account.livemode = "_live_" in data.secret_key
    account.currency = data.currency
    account.markup_bps = data.markup_bps
    account.updated_at = utcnow()
    await session.flush()
    return account


async def get_account(session: AsyncSession, tenant_id: uuid.UUID) -> StripeAccount | None:
    return await StripeAccountRepository(session, tenant_id).current()


def render_account(tenant_id: uuid.UUID, account: StripeAccount | None) -> StripeAccountRead:
    """Status only: the secrets never leave the database, sealed."""
    if account is None:
        return StripeAccountRead(configured=False, webhook_path=webhook_path(tenant_id))
    return StripeAccountRead(
        configured=True,
        livemode=account.livemode,
        secret_key_last4=account.secret_key_last4,
        currency=account.currency,
        markup_bps=account.markup_bps,
        minimum_charge_cents=MINIMUM_CHARGE.get(account.currency),
        webhook_path=webhook_path(tenant_id),
        updated_at=account.updated_at,
    )


# --- runs ----------------------------------------------------------------------------------


async def list_runs(
    session: AsyncSession, tenant_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[RunRead], Page[BillingRun]]:
    runs = BillingRunRepository(session, tenant_id)
    page = await runs.paginate(runs.base(), limit=limit, cursor=cursor)
    return await _render_runs(session, tenant_id, page, with_records=False), page


async def get_run(session: AsyncSession, tenant_id: uuid.UUID, run_id: uuid.UUID) -> RunRead:
    run = await BillingRunRepository(session, tenant_id).get(run_id)
    if run is None:
        raise NotFound(f"No billing run with id {run_id}.", param="id")
    page = Page(items=[run], has_more=False, next_cursor=None)
    return (await _render_runs(session, tenant_id, page, with_records=True))[0]


async def _render_runs(
    session: AsyncSession, tenant_id: uuid.UUID, page: Page[BillingRun], *, with_records: bool
) -> list[RunRead]:
    records = await BillingRecordRepository(session, tenant_id).for_runs(
        [run.id for run in page.items]
    )
    lines = (
        await BillingLineRepository(session, tenant_id).for_records([r.id for r in records])
        if with_records
        else []
    )
    out = []
    for run in page.items:
        own = sorted((r for r in records if r.run_id == run.id), key=lambda r: r.customer_id)
        read = RunRead(
            id=str(run.id), period=run.period, currency=run.currency, markup_bps=run.markup_bps,
            status="incomplete" if any(r.state in IN_PROGRESS for r in own) else "complete",
            customers=len(own),
            invoices=sum(1 for r in own if r.stripe_invoice_id is not None),
            carried_forward=sum(1 for r in own if r.state == CARRIED_FORWARD),
            failed=sum(1 for r in own if r.state in IN_PROGRESS and r.last_error),
            amount_cents=sum(r.amount_cents for r in own if r.state != CARRIED_FORWARD),
            syncs=run.syncs, last_synced_at=run.last_synced_at, created_at=run.created_at,
        )  # fmt: skip
        if with_records:
            read.records = [render_record(r, [ln for ln in lines if ln.record_id == r.id])
                            for r in own]  # fmt: skip
        out.append(read)
    return out


def render_plan(plan: Plan) -> dict[str, Any]:
    """A dry run: what a sync would bill now, with nothing written and nothing sent."""
    return {
        "object": "billing.plan",
        "period": plan.period,
        "currency": plan.currency,
        "markup_bps": plan.markup_bps,
        "amount_cents": sum(r.amount_cents for r in plan.records if not r.carried_forward),
        "already_billed": plan.already_billed,
        "records": [
            {
                "customer_id": r.customer_id,
                "amount_cents": r.amount_cents,
                "carried_forward": r.carried_forward,
                "lines": [
                    {
                        "key_id": str(line.key_id),
                        "key_name": line.key_name,
                        "spend_micros": line.spend_micros,
                        "carried_in_micros": line.carried_in_micros,
                        "amount_cents": line.amount_cents,
                    }
                    for line in r.lines
                ],
            }
            for r in plan.records
        ],
    }


def render_record(record: BillingRecord, lines: list[Any]) -> RecordRead:
    return RecordRead(
        id=str(record.id), customer_id=record.customer_id, state=record.state,
        currency=record.currency, amount_cents=record.amount_cents,
        stripe_invoice_id=record.stripe_invoice_id, invoice_status=record.invoice_status,
        carried_into_id=str(record.carried_into_id) if record.carried_into_id else None,
        attempts=record.attempts, last_error=record.last_error,
        finalized_at=record.finalized_at, paid_at=record.paid_at,
        lines=[
            LineRead(
                key_id=str(line.key_id), key_name=line.key_name, spend_micros=line.spend_micros,
                carried_in_micros=line.carried_in_micros, amount_cents=line.amount_cents,
                stripe_invoice_item_id=line.stripe_invoice_item_id,
            )
            for line in lines
        ],
    )  # fmt: skip


# --- Stripe's webhooks ----------------------------------------------------------------------


@dataclass(slots=True)
class WebhookOutcome:
    event_id: str
    type: str
    duplicate: bool = False
    handled: bool = False
    record: BillingRecord | None = None
    suspended: list[uuid.UUID] = field(default_factory=list)
    restored: list[uuid.UUID] = field(default_factory=list)

    @property
    def changed_keys(self) -> list[uuid.UUID]:
        return [*self.suspended, *self.restored]


def verify_event(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Stripe's signature scheme, with a 300 s tolerance against replays of old deliveries."""
    if not signature:
        raise InvalidSignature("Missing the Stripe-Signature header.", param="Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8", "replace"), signature, secret, SIGNATURE_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(
            f"The Stripe-Signature does not verify: {exc.user_message or exc}",
            param="Stripe-Signature",
        ) from None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The webhook body is not a JSON event.") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise InvalidRequest("The webhook body is not a Stripe event.")
    return event


def _invoice_id(event: dict[str, Any]) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value.startswith("in_") else None


async def handle_stripe_event(
    session: AsyncSession,
    box: SecretBox,
    gateways: GatewayFactory,
    tenant_id: uuid.UUID,
    payload: bytes,
    signature: str | None,
) -> WebhookOutcome:
    """Verify, deduplicate, re-read the invoice from Stripe (events can arrive late, twice or
    out of order: the invoice's current status decides), then suspend or restore the keys of
    the invoice's customer. Only invoices Tollgate created are acted on."""
    account = await StripeAccountRepository(session, tenant_id).current()
    if account is None:
        raise NotFound("No Stripe account is configured for this tenant.")
    event = verify_event(payload, signature, box.open(account.webhook_secret))
    type_ = str(event.get("type") or "")
    outcome = WebhookOutcome(event_id=event["id"], type=type_)
    invoice_id = _invoice_id(event)
    if type_ not in HANDLED_EVENTS or invoice_id is None:
        return outcome
    if not await StripeEventRepository(session, tenant_id).record_once(
        event["id"], type_, invoice_id
    ):
        outcome.duplicate = True
        return outcome
    record = await BillingRecordRepository(session, tenant_id).by_invoice(invoice_id)
    if record is None:
        return outcome
    gateway = gateways(box.open(account.secret_key))
    try:
        current = await gateway.retrieve_invoice(invoice_id)
    except stripe.StripeError as exc:  # 502: Stripe retries the delivery later
        raise UpstreamError(f"Stripe could not be asked about {invoice_id}: {exc}") from None
    finally:
        await gateway.aclose()
    _apply_status(record, current.status, type_)
    await session.flush()
    outcome.handled, outcome.record = True, record
    outcome.suspended, outcome.restored = await _sync_suspension(
        session, tenant_id, record.customer_id
    )
    return outcome


def _apply_status(record: BillingRecord, status: str | None, type_: str) -> None:
    now = utcnow()
    record.invoice_status = status or record.invoice_status
    if status == "paid":
        record.state, record.paid_at = PAID, record.paid_at or now
    elif status == "void":
        record.state = VOID
    elif status in ("open", "uncollectible") and type_ in FAILED_EVENTS:
        record.state = PAYMENT_FAILED
    elif status in ("open", "uncollectible") and record.state in IN_PROGRESS:
        record.state = FINALIZED  # finalized by hand in Stripe before the sync got there
    record.updated_at = now


async def _sync_suspension(
    session: AsyncSession, tenant_id: uuid.UUID, customer_id: str
) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """A customer with an unpaid (payment failed) invoice has every key suspended (402
    payment_required); once none is unpaid, the keys billing suspended work again."""
    unpaid = await BillingRecordRepository(session, tenant_id).customer_has_unpaid(customer_id)
    suspended, restored = [], []
    now = utcnow()
    for key in await ApiKeyRepository(session, tenant_id).for_stripe_customer(customer_id):
        if unpaid and key.suspended_at is None:
            key.suspended_at = key.updated_at = now
            suspended.append(key.id)
        elif not unpaid and key.suspended_at is not None:
            key.suspended_at, key.updated_at = None, now
            restored.append(key.id)
    await session.flush()
    return suspended, restored


# --- telling the tenant ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantNotice:
    url: str
    secret: str
    body: bytes


async def tenant_notice(
    session: AsyncSession, box: SecretBox, tenant_id: uuid.UUID, outcome: WebhookOutcome
) -> TenantNotice | None:
    """The signed webhook (SPEC §5.5) for the tenant's alerts URL, when there is news."""
    record = outcome.record
    if record is None or record.state not in (PAID, PAYMENT_FAILED, VOID):
        return None
    tenant = await session.get(Tenant, tenant_id)
    url = ((tenant.settings.get("alerts") or {}).get("webhook_url")) if tenant else None
    if tenant is None or not url or not tenant.webhook_secret:
        return None
    kind = {PAID: "billing.invoice.paid", PAYMENT_FAILED: "billing.invoice.payment_failed",
            VOID: "billing.invoice.voided"}[record.state]  # fmt: skip
    body = {
        "object": "event",
        "id": f"evt_billing_{uuid.uuid5(uuid.NAMESPACE_URL, outcome.event_id).hex}",
        "type": kind,
        "created_at": isoformat(utcnow()),
        "data": {
            "record_id": str(record.id),
            "period": record.period,
            "customer_id": record.customer_id,
            "stripe_invoice_id": record.stripe_invoice_id,
            "state": record.state,
            "amount_cents": record.amount_cents,
            "currency": record.currency,
            "keys_suspended": [str(k) for k in outcome.suspended],
            "keys_restored": [str(k) for k in outcome.restored],
            "stripe_event_id": outcome.event_id,
        },
    }
    return TenantNotice(url=url, secret=box.open(tenant.webhook_secret), body=orjson.dumps(body))


async def deliver_notice(notice: TenantNotice, *, allow_private: bool) -> bool:
    """A few attempts with backoff; runs after the response to Stripe has been sent. The
    client checks the address it connects to (`create_webhook_client`): a host resolving to a
    private address is refused there, however it resolved when the URL was saved."""
    async with create_webhook_client(allow_private=allow_private) as client:
        for delay in NOTIFY_RETRY_DELAYS_SECONDS:
            await asyncio.sleep(delay)
            try:
                status = await post_signed(
                    client, notice.url, notice.secret, notice.body, timeout_seconds=10.0
                )
            except httpx.InvalidURL:
                logger.warning("billing notice not sent: the alerts URL is not a valid URL")
                return False
            except httpx.HTTPError as exc:
                if refused(exc):
                    logger.warning("billing notice not sent: the alerts URL is not allowed")
                    return False
                continue
            if 200 <= status < 300:
                return True
    logger.warning("billing notice to the tenant's alerts URL failed after retries")
    return False
