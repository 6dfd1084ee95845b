"""The job queue, chosen once at start-up (SPEC §1): arq on Redis, or in-process tasks.

`run(name, *args, job_id=…, timeout_seconds=…)` enqueues a job and awaits its result. With Redis
the job lives in Redis until a worker (`tollgate worker`, or the API's own when it runs
background jobs) has run it, and its result stays there for an hour: a second `run` with the same
`job_id` (a retried turn) gets that result instead of running the job again. Without Redis the
same function runs as a task of this process, deduplicated the same way while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import Job
from arq.worker import Function, Worker

logger = logging.getLogger("tollgate.jobs")

JobFunction = Callable[..., Coroutine[Any, Any, Any]]
POLL_SECONDS = 0.02


class JobQueue(Protocol):
    async def run(self, name: str, *args: Any, job_id: str, timeout_seconds: float) -> Any:
        """The job's result; `TimeoutError` when it is not done in time."""
        ...

    async def close(self) -> None: ...


class LocalJobQueue:
    """The embedded default: jobs run as tasks of this process, with `ctx` as a worker's."""

    def __init__(self, functions: dict[str, JobFunction], ctx: dict[str, Any]) -> None:
        self._functions = functions
        self._ctx = ctx
        self._running: dict[str, asyncio.Task[Any]] = {}

    async def run(self, name: str, *args: Any, job_id: str, timeout_seconds: float) -> Any:
        task = self._running.get(job_id)
        if task is None:
            task = asyncio.create_task(self._functions[name](self._ctx, *args), name=job_id)
            self._running[job_id] = task
            task.add_done_callback(lambda _: self._running.pop(job_id, None))
        # Shielded: a caller that gives up does not cancel a job another caller may await.
        return await asyncio.wait_for(asyncio.shield(task), timeout_seconds)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


class ArqJobQueue:
    def __init__(self, pool: ArqRedis) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, redis_url: str) -> ArqJobQueue:
        return cls(await create_pool(RedisSettings.from_dsn(redis_url)))

    async def run(self, name: str, *args: Any, job_id: str, timeout_seconds: float) -> Any:
        job = await self._pool.enqueue_job(name, *args, _job_id=job_id)
        if job is None:  # queued, running or done under this id already: await that one
            job = Job(job_id, self._pool)
        return await job.result(timeout=timeout_seconds, poll_delay=POLL_SECONDS)

    async def close(self) -> None:
        await self._pool.aclose(close_connection_pool=True)


class EmbeddedWorker:
    """An arq worker inside the API process (`api_runs_background_jobs`), for the functions
    the API itself enqueues; `tollgate worker` runs the same functions."""

    def __init__(self, redis_url: str, functions: list[Function], ctx: dict[str, Any]) -> None:
        self._worker = Worker(
            functions,
            redis_settings=RedisSettings.from_dsn(redis_url),
            handle_signals=False,
            poll_delay=POLL_SECONDS,
            max_jobs=100,
            ctx=ctx,
            log_results=False,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._worker.main(), name="embedded-arq-worker")

    async def close(self) -> None:
        """Stop polling and cancel the jobs in flight (arq runs them again elsewhere once their
        lease expires). Not `Worker.close()`: it calls a Redis method deprecated in redis 5."""
        worker = self._worker
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in worker.tasks.values():
            task.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        pool = worker._pool
        if pool is not None:
            await pool.aclose(close_connection_pool=True)
