"""What thread turns need at run time, built in the app's lifespan: the job queue for tool
calls (arq with Redis, in-process tasks without), the per-thread lock, and, when the API runs
background jobs, an arq worker of its own for the tool calls."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.gateway.pipeline import Gateway
from api.kit.crypto import SecretBox
from api.kit.jobs import ArqJobQueue, EmbeddedWorker, JobQueue, LocalJobQueue
from api.kit.locks import LocalLocks, Locks, RedisLocks
from api.settings import Settings
from api.thread.turns import TurnContext
from api.tool import runner


class TurnServices:
    def __init__(self, context: TurnContext, worker: EmbeddedWorker | None) -> None:
        self.context = context
        self._worker = worker

    @classmethod
    async def start(
        cls,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis | None,
        gateway: Gateway,
        webhooks: httpx.AsyncClient,
        box: SecretBox,
    ) -> TurnServices:
        tool_runner = runner.ToolRunner(sessionmaker, webhooks, box)
        ctx = {"tool_runner": tool_runner}
        jobs: JobQueue
        locks: Locks
        worker = None
        if redis is not None and settings.redis_url:
            jobs = ArqJobQueue.connect(settings.redis_url)
            locks = RedisLocks(redis)
            if settings.api_runs_background_jobs:
                worker = EmbeddedWorker(settings.redis_url, [runner.job_function()], ctx)
                worker.start()
        else:
            jobs = LocalJobQueue({runner.JOB_NAME: runner.call_webhook}, ctx)
            locks = LocalLocks()
        return cls(TurnContext(gateway, sessionmaker, jobs, locks), worker)

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.close()
        await self.context.jobs.close()
