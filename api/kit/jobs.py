"""The job queue, chosen once at start-up (SPEC §1): arq on Redis, or in-process tasks.

`enqueue(name, *args, job_id=…)` queues a job and returns; `run(name, *args, job_id=…,
timeout_seconds=…)` queues one and awaits its result. A job id is run once while it is queued or
running, so enqueueing the same id twice is harmless. A job that raises arq's `Retry` is run
again after its delay, up to its task's `max_tries`, on both queues. With Redis
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

from arq.connections import ArqRedis
from arq.cron import CronJob
from arq.jobs import Job
from arq.worker import Function, Retry, Worker

logger = logging.getLogger("tollgate.jobs")

JobFunction = Callable[..., Coroutine[Any, Any, Any]]
POLL_SECONDS = 0.02  # how often an awaited job's result is looked for
WORKER_POLL_SECONDS = 0.05  # how often the embedded worker looks for jobs (as `tollgate worker`)


class JobQueue(Protocol):
    async def run(self, name: str, *args: Any, job_id: str, timeout_seconds: float) -> Any:
        """The job's result; `TimeoutError` when it is not done in time."""
        ...

    async def enqueue(self, name: str, *args: Any, job_id: str, defer_seconds: float = 0.0) -> None:
        """Queue the job and return; a no-op while `job_id` is queued or running."""
        ...

    async def close(self) -> None: ...


class LocalJobQueue:
    """The embedded default: jobs run as tasks of this process, with `ctx` as a worker's (plus
    `job_id` and `job_try`, as arq adds them)."""

    def __init__(
        self,
        functions: dict[str, JobFunction],
        ctx: dict[str, Any],
        max_tries: dict[str, int] | None = None,
    ) -> None:
        self._functions = functions
        self._ctx = ctx
        self._max_tries = max_tries or {}
        self._running: dict[str, asyncio.Task[Any]] = {}

    def _start(
        self, name: str, args: tuple[Any, ...], job_id: str, defer: float
    ) -> asyncio.Task[Any]:
        task = self._running.get(job_id)
        if task is None:
            task = asyncio.create_task(self._attempts(name, args, job_id, defer), name=job_id)
            self._running[job_id] = task
            task.add_done_callback(lambda _: self._running.pop(job_id, None))
        return task

    async def _attempts(self, name: str, args: tuple[Any, ...], job_id: str, defer: float) -> Any:
        tries = self._max_tries.get(name, 1)
        for job_try in range(1, tries + 1):
            if defer > 0:
                await asyncio.sleep(defer)
            try:
                ctx = {**self._ctx, "job_id": job_id, "job_try": job_try}
                return await self._functions[name](ctx, *args)
            except Retry as retry:
                if job_try == tries:
                    raise
                defer = (retry.defer_score or 0) / 1000
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, name: str, *args: Any, job_id: str, timeout_seconds: float) -> Any:
        task = self._start(name, args, job_id, 0.0)
        # Shielded: a caller that gives up does not cancel a job another caller may await.
        return await asyncio.wait_for(asyncio.shield(task), timeout_seconds)

    async def enqueue(self, name: str, *args: Any, job_id: str, defer_seconds: float = 0.0) -> None:
        task = self._start(name, args, job_id, defer_seconds)
        task.add_done_callback(_log_failure)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


def _log_failure(task: asyncio.Task[Any]) -> None:
    """What arq's worker does for a job nobody awaits: its failure is logged, not lost."""
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("job %s failed", task.get_name(), exc_info=error)


class ArqJobQueue:
    def __init__(self, pool: ArqRedis) -> None:
        self._pool = pool

    @classmethod
    def connect(cls, redis_url: str) -> ArqJobQueue:
        """Connects on first use: an unreachable Redis fails the calls, not the start-up."""
        return cls(ArqRedis.from_url(redis_url))

    async def enqueue(self, name: str, *args: Any, job_id: str, defer_seconds: float = 0.0) -> None:
        defer = defer_seconds if defer_seconds > 0 else None
        await self._pool.enqueue_job(name, *args, _job_id=job_id, _defer_by=defer)

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

    def __init__(
        self,
        redis_url: str,
        functions: list[Function],
        ctx: dict[str, Any],
        cron_jobs: list[CronJob] | None = None,
    ) -> None:
        self._pool = ArqRedis.from_url(redis_url)
        self._worker = Worker(
            functions,
            cron_jobs=cron_jobs,
            redis_pool=self._pool,
            handle_signals=False,
            poll_delay=WORKER_POLL_SECONDS,
            max_jobs=100,
            ctx=ctx,
            log_results=False,
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._resting = False  # between attempts while Redis is away: safe to cancel

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedded-arq-worker")

    async def _run(self) -> None:
        while True:  # Redis can be away for a while; the worker resumes when it is back
            try:
                await self._worker.main()
                return  # stopped by `close`
            except Exception:
                if self._stopping:
                    return
                logger.exception("the embedded job worker failed; restarting it in 1 s")
                self._resting = True
                try:
                    await asyncio.sleep(1.0)
                finally:
                    self._resting = False

    async def close(self) -> None:
        """Cancel the jobs in flight (arq records them and runs them again elsewhere) and stop
        at the end of the current poll: a poll cancelled mid-command leaks its connection.
        Not `Worker.close()`: it calls a Redis method deprecated in redis 5."""
        worker = self._worker
        self._stopping = True
        worker.burst, worker.max_burst_jobs = True, 0  # arq's own way out of its poll loop
        for task in worker.tasks.values():
            task.cancel()
        if self._task is not None:
            if not self._resting:
                with contextlib.suppress(Exception):  # TimeoutError included
                    await asyncio.wait_for(asyncio.shield(self._task), 2.0)
            self._task.cancel()  # a no-op once it has returned
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        await self._pool.aclose(close_connection_pool=True)
