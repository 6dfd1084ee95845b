"""Billing: the tenant's Stripe account (its state, never its secrets), the form that saves it,
the month-end runs with each customer's Stripe state, and "Run sync now".

Saving and syncing call `/v1/billing`'s own handlers. A dry run writes nothing, so its plan is
this answer; a real sync redirects to its run, whose records are what it did.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.billing import routes as billing_routes
from api.billing import service as billing_service
from api.billing.amounts import MINIMUM_CHARGE, previous_period
from api.billing.schemas import StripeAccountUpdate, SyncRequest
from api.dashboard.forms import Cursor, minor_units, page_limit, validated
from api.dashboard.render import DashboardRoute, page, redirect
from api.dashboard.session import SignedIn, posted_form
from api.deps import DbSession
from api.kit.ids import parse_id
from api.kit.time import utcnow

router = APIRouter(prefix="/billing", route_class=DashboardRoute)

# What a redirect after a post may say: fixed sentences, never text from the request.
NOTICES = {
    "stripe": "Stripe settings saved.",
    "synced": "Sync finished. Each customer's state in Stripe is below.",
}


@router.get("")
async def show_billing(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
    limit: str | None = None,
    done: str | None = None,
) -> Response:
    tenant_id = signed.principal.tenant_id
    account = billing_service.render_account(
        tenant_id, await billing_service.get_account(session, tenant_id)
    )
    size = page_limit(limit)
    runs, listed = await billing_service.list_runs(session, tenant_id, limit=size, cursor=cursor)
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return page(
        request, signed, "billing.html", account=account, runs=runs, page_of=listed, limit=size,
        webhook_url=origin + account.webhook_path, currencies=sorted(MINIMUM_CHARGE),
        period=previous_period(utcnow()), money=minor_units, notice=NOTICES.get(done or ""),
        nav="billing",
    )  # fmt: skip


@router.post("/stripe")
async def save_stripe_account(request: Request, session: DbSession, signed: SignedIn) -> Response:
    """Both secrets every time (the API takes the account whole); the markup in basis points."""
    form = await posted_form(request, signed)
    data: dict[str, Any] = {
        "secret_key": form.get("secret_key", ""),
        "webhook_secret": form.get("webhook_secret", ""),
        "currency": form.get("currency", "usd"),
    }
    if form.get("markup_bps", "").strip():
        data["markup_bps"] = form["markup_bps"].strip()
    body = validated(StripeAccountUpdate, data)
    await billing_routes.put_stripe_account(request, body, session, signed.principal)
    return redirect("/dashboard/billing?done=stripe")


@router.post("/sync")
async def sync_billing(request: Request, signed: SignedIn) -> Response:
    form = await posted_form(request, signed)
    body = validated(
        SyncRequest, {"period": form.get("period", "").strip(), "dry_run": "dry_run" in form}
    )
    outcome = await billing_routes.sync_billing(request, body, signed.principal)
    if outcome.get("object") == "billing.plan":  # a dry run: nothing was written
        return page(request, signed, "billing_plan.html", plan=outcome, money=minor_units,
                    nav="billing")  # fmt: skip
    return redirect(f"/dashboard/billing/runs/{outcome['id']}?done=synced")


@router.get("/runs/{run_id}")
async def show_run(
    request: Request, run_id: str, session: DbSession, signed: SignedIn, done: str | None = None
) -> Response:
    run = await billing_service.get_run(
        session, signed.principal.tenant_id, parse_id(run_id, "billing run")
    )
    return page(
        request, signed, "billing_run.html", run=run, money=minor_units,
        notice=NOTICES.get(done or ""), nav="billing",
    )  # fmt: skip
