"""Month-end billing for arq's cron: bill the month that just ended, for every tenant with
Stripe configured.

Register it as `cron(billing_month_end, day=1, hour=2, minute=0, unique=True)` (UTC): a little
after month end; it drains the usage-ledger stream first, so the month is complete.

Idempotent: a record is unique per (tenant, customer, period) and resumes where it stopped;
every Stripe call carries the idempotency key `tollgate:<tenant>:<period>:<customer>:<kind>`
(kind: invoice, item:<key id>, finalize). Running it twice, or after a crash, bills nothing twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.billing.amounts import previous_period
from api.billing.stripe_gateway import gateway_factory
from api.billing.sync import sync_tenants
from api.db import create_engine, create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.settings import Settings, get_settings, resolve_secret_key
from api.usage.ledger import LedgerDrain


async def billing_month_end(ctx: dict[str, Any]) -> dict[str, Any]:
    """Uses the worker's `settings` and `sessionmaker` from `ctx` when it has them."""
    settings: Settings = ctx.get("settings") or get_settings()
    sessionmaker: async_sessionmaker[AsyncSession] | None = ctx.get("sessionmaker")
    engine = None
    if sessionmaker is None:
        engine = create_engine(settings.resolved_database_url)
        sessionmaker = create_sessionmaker(engine)
    period = previous_period(utcnow())
    drain: LedgerDrain | None = ctx.get("drain")
    try:
        if drain is not None:  # the month's last events, still in the ledger stream
            await drain.until_empty(timeout_seconds=60)
        results = await sync_tenants(
            sessionmaker, SecretBox(resolve_secret_key(settings)), gateway_factory(settings), period
        )
    finally:
        if engine is not None:
            await engine.dispose()
    return {
        "period": period,
        "tenants": [
            {
                "tenant_id": str(result.tenant_id),
                "run_id": str(result.outcome.run_id) if result.outcome else None,
                "failed": result.outcome.failed if result.outcome else {},
                "error": result.error,
            }
            for result in results
        ],
    }
