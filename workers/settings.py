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
from api.alert.email import mailer_from_settings
from api.alert.service import AlertNotifier
from api.background import arq_cron_jobs, arq_functions
from api.db import create_sessionmaker, engine_for
from api.gateway.catalog import Catalog
from api.gateway.providers.registry import upstream_proxies
from api.gateway.runtime import GatewayRuntime
from api.kit.crypto import SecretBox
from api.kit.heap import freeze_startup
from api.kit.jobs import ArqJobQueue
from api.kit.webhook_client import create_webhook_client
from api.metrics import Metrics
from api.search.runtime import Search
from api.settings import get_settings, resolve_secret_key
from api.thread.context import turn_context
from api.tool import runner as tool_runner
from workers.jobs.alerts import resend_alerts
from workers.jobs.billing import billing_month_end


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    engine = engine_for(settings)
    sessionmaker = create_sessionmaker(engine)
    redis = Redis.from_url(settings.redis_url or "")
    webhooks = create_webhook_client(allow_private=settings.allow_private_webhooks)
    box = SecretBox(resolve_secret_key(settings))
    alerts = AlertNotifier(sessionmaker, webhooks, box, mailer=mailer_from_settings(settings))
    # Async jobs call models here, through the same pipeline as the API.
    runtime = GatewayRuntime.start(
        settings, sessionmaker, redis, box, catalog=Catalog.build(settings.models),
        metrics=Metrics(), on_crossing=alerts.crossed, consumer=f"worker-{socket.gethostname()}",
        proxies=upstream_proxies(),
    )  # fmt: skip
    drain = runtime.drain
    assert drain is not None  # a worker always has Redis
    queue = ArqJobQueue.connect(settings.redis_url or "")
    # Search indexes and embeds queries here when its store is a Qdrant server; the model loads
    # in the background now, so the first query does not wait for it.
    search = Search.build(settings, sessionmaker, worker=True)
    search.start(settings, queue)
    search.warm_up()
    ctx.update(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis_client=redis,
        webhooks=webhooks,
        secret_box=box,
        alerts=alerts,
        runtime=runtime,
        gateway=runtime.gateway,
        queue=queue,
        turns=turn_context(
            sessionmaker, redis, runtime.gateway, queue, on_persisted=search.turn_persisted
        ),
        search=search,
        drain=drain,
        tool_runner=tool_runner.ToolRunner(sessionmaker, webhooks, box),
        drain_task=asyncio.create_task(drain.run(), name="ledger-drain"),
    )
    freeze_startup()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["runtime"].close()  # the usage events of the jobs' calls are written first
    task: asyncio.Task[None] = ctx["drain_task"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx["queue"].close()
    await ctx["search"].stop()
    await ctx["search"].close()
    await ctx["runtime"].close_clients()
    await ctx["alerts"].close()
    await ctx["webhooks"].aclose()
    await ctx["redis_client"].aclose()
    await ctx["engine"].dispose()


class WorkerSettings:
    functions: ClassVar[list[Any]] = arq_functions(get_settings())
    cron_jobs: ClassVar[list[CronJob]] = [
        *arq_cron_jobs(get_settings()),
        cron(resend_alerts, second=0, unique=True, timeout=300),
        # Shortly after each month ends: invoice the month through each tenant's Stripe account.
        cron(billing_month_end, day=1, hour=2, minute=0, unique=True, timeout=3600),
    ]
    on_startup = startup
    on_shutdown = shutdown
    max_jobs = 100
    poll_delay = 0.05  # 50 ms from enqueue to start instead of 500 ms (measured)
