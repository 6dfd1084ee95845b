"""arq `WorkerSettings` for `tollgate worker`: what runs there, and the resources it shares.

`startup` builds the worker's long-lived resources into arq's `ctx` (as the API's lifespan
does) and starts the usage-ledger drain, which runs for the worker's whole life; jobs and cron
functions read what they need from `ctx`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, ClassVar

from arq.cron import CronJob, cron
from redis.asyncio import Redis

import api.models  # noqa: F401  # the whole schema: foreign keys resolve at the first insert
from api.alert.service import AlertNotifier
from api.background import arq_functions
from api.db import create_engine, create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.heap import freeze_startup
from api.kit.webhook_client import create_webhook_client
from api.settings import get_settings, resolve_secret_key
from api.tool import runner as tool_runner
from api.usage.ledger import LedgerDrain
from workers.jobs.alerts import resend_alerts
from workers.jobs.billing import billing_month_end


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    engine = create_engine(settings.resolved_database_url)
    sessionmaker = create_sessionmaker(engine)
    redis = Redis.from_url(settings.redis_url or "")
    webhooks = create_webhook_client(allow_private=settings.allow_private_webhooks)
    drain = LedgerDrain(redis, sessionmaker, consumer=f"worker-{socket.gethostname()}")
    ctx.update(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis_client=redis,
        webhooks=webhooks,
        alerts=AlertNotifier(sessionmaker, webhooks, SecretBox(resolve_secret_key(settings))),
        drain=drain,
        tool_runner=tool_runner.ToolRunner(
            sessionmaker, webhooks, SecretBox(resolve_secret_key(settings))
        ),
        drain_task=asyncio.create_task(drain.run(), name="ledger-drain"),
    )
    freeze_startup()


async def shutdown(ctx: dict[str, Any]) -> None:
    task: asyncio.Task[None] = ctx["drain_task"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx["alerts"].close()
    await ctx["webhooks"].aclose()
    await ctx["redis_client"].aclose()
    await ctx["engine"].dispose()


class WorkerSettings:
    functions: ClassVar[list[Any]] = arq_functions()
    cron_jobs: ClassVar[list[CronJob]] = [
        cron(resend_alerts, second=0, unique=True, timeout=300),
        # Shortly after each month ends: invoice the month through each tenant's Stripe account.
        cron(billing_month_end, day=1, hour=2, minute=0, unique=True, timeout=3600),
    ]
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 100
    poll_delay = 0.05  # 50 ms from enqueue to start instead of 500 ms (measured)
