"""`/v1/billing`: the tenant's Stripe account, month-end syncs and their runs (SPEC §5.8), and
the endpoint Stripe's webhooks reach (signed, so it takes no API key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Query, Request

from api.billing import service as billing_service
from api.billing import sync as billing_sync
from api.billing.schemas import RunRead, StripeAccountRead, StripeAccountUpdate, SyncRequest
from api.billing.stripe_gateway import gateway_factory
from api.db import after_commit
from api.deps import DbSession, MasterPrincipal
from api.kit.ids import parse_id
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body

router = APIRouter(prefix="/v1/billing", tags=["billing"])


@router.put("/stripe", response_model=StripeAccountRead)
async def put_stripe_account(
    request: Request, data: StripeAccountUpdate, session: DbSession, principal: MasterPrincipal
) -> StripeAccountRead:
    account = await billing_service.put_account(
        session, request.state.secret_box, principal.tenant_id, data
    )
    return billing_service.render_account(principal.tenant_id, account)


@router.get("/stripe", response_model=StripeAccountRead)
async def get_stripe_account(session: DbSession, principal: MasterPrincipal) -> StripeAccountRead:
    account = await billing_service.get_account(session, principal.tenant_id)
    return billing_service.render_account(principal.tenant_id, account)


@router.post("/sync")
async def sync_billing(
    request: Request, data: SyncRequest, principal: MasterPrincipal
) -> dict[str, Any]:
    """Bill the period now. The sync commits step by step on its own sessions."""
    state = request.state
    await state.gateway.ledger.flush()  # the period's last events are in the database first
    outcome = await billing_sync.sync_period(
        state.sessionmaker, state.secret_box, gateway_factory(state.settings),
        principal.tenant_id, data.period, dry_run=data.dry_run,
    )  # fmt: skip
    if outcome.run_id is None:
        return billing_service.render_plan(outcome.plan)
    async with state.sessionmaker() as session:
        run = await billing_service.get_run(session, principal.tenant_id, outcome.run_id)
    return run.model_dump(mode="json")


@router.get("/runs")
async def list_billing_runs(
    session: DbSession,
    principal: MasterPrincipal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
) -> dict[str, Any]:
    runs, page = await billing_service.list_runs(
        session, principal.tenant_id, limit=limit, cursor=cursor
    )
    return list_body([run.model_dump(mode="json", exclude={"records"}) for run in runs], page)


@router.get("/runs/{run_id}", response_model=RunRead)
async def get_billing_run(run_id: str, session: DbSession, principal: MasterPrincipal) -> RunRead:
    return await billing_service.get_run(
        session, principal.tenant_id, parse_id(run_id, "billing run")
    )


@router.post("/stripe/webhook/{tenant_id}")
async def receive_stripe_webhook(
    tenant_id: str, request: Request, session: DbSession, background: BackgroundTasks
) -> dict[str, Any]:
    state = request.state
    tenant = parse_id(tenant_id, "tenant")
    outcome = await billing_service.handle_stripe_event(
        session, state.secret_box, gateway_factory(state.settings), tenant,
        await request.body(), request.headers.get("stripe-signature"),
    )  # fmt: skip
    changed = outcome.changed_keys
    if changed:

        async def forget_keys() -> None:
            for key_id in changed:
                await state.key_cache.key_changed(key_id)

        after_commit(session, forget_keys)
    notice = await billing_service.tenant_notice(session, state.secret_box, tenant, outcome)
    if notice is not None:
        # Background tasks run after the response (so after the commit): Stripe is answered
        # at once, and the tenant hears only of what was stored.
        background.add_task(
            billing_service.deliver_notice,
            notice,
            allow_private=state.settings.allow_private_webhooks,
        )
    return {
        "received": True,
        "event_id": outcome.event_id,
        "duplicate": outcome.duplicate,
        "handled": outcome.handled,
    }
