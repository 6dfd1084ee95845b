"""What runs off the request: one table of background tasks, and the queue that runs them.

Each domain contributes its tasks to `tasks()` (tool webhook calls today; search indexing and
async jobs beside them). `tollgate worker` registers the same table with arq, and so does the
API's own worker when it runs background jobs; the embedded default runs the same functions as
tasks of the API process (`LocalJobQueue`). A task reads what it needs from `ctx`, which the
API's lifespan and the worker's start-up build with the same keys (and `ctx["queue"]`, the queue
itself, for a task that enqueues another).

A task with `every_seconds` also runs on its own, that often (sweeps that find work a lost
message left behind): as an arq cron job where arq runs, else from a loop of the API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from arq.cron import CronJob, cron
from arq.worker import Function, func

from api.kit.jobs import ArqJobQueue, EmbeddedWorker, JobFunction, JobQueue, LocalJobQueue
from api.kit.time import utcnow
from api.settings import Settings


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    function: JobFunction
    timeout_seconds: float
    max_tries: int
    every_seconds: int | None = None  # a divisor of 60 (seconds) or of 3600 (minutes)
    keep_result_seconds: float | None = None  # arq's default (an hour) when None


def tasks(settings: Settings) -> list[Task]:
    # Imported here: the domains import this module's `Task`.
    from api.job import runner as job_runner
    from api.response import tasks as response_tasks
    from api.search import tasks as search_tasks
    from api.tool import runner as tool_runner
    from api.trace import tasks as trace_tasks

    return [
        tool_runner.TASK,
        *job_runner.tasks(settings.job_timeout_seconds),
        *search_tasks.tasks(),
        *response_tasks.TASKS,
        *trace_tasks.TASKS,
    ]


def arq_functions(settings: Settings) -> list[Function]:
    return [
        func(
            t.function,
            name=t.name,
            timeout=t.timeout_seconds,
            max_tries=t.max_tries,
            keep_result=t.keep_result_seconds,
        )
        for t in tasks(settings)
    ]


def arq_cron_jobs(settings: Settings) -> list[CronJob]:
    jobs = []
    for t in tasks(settings):
        if t.every_seconds is None:
            continue
        every = t.every_seconds
        if every < 60:
            when: dict[str, Any] = {"second": set(range(0, 60, every))}
        else:
            when = {"minute": set(range(0, 60, every // 60)), "second": 0}
        jobs.append(
            cron(t.function, name=f"cron:{t.name}", timeout=t.timeout_seconds, unique=True, **when)
        )
    return jobs


logger = logging.getLogger("tollgate.background")


class Background:
    """The queue the API enqueues on, and the API's own arq worker when it runs one."""

    def __init__(self, queue: JobQueue, worker: EmbeddedWorker | None) -> None:
        self.queue = queue
        self._worker = worker
        self._periodic: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, settings: Settings, ctx: dict[str, Any]) -> Background:
        background: Background
        if not settings.redis_url:
            table = tasks(settings)
            functions = {t.name: t.function for t in table}
            tries = {t.name: t.max_tries for t in table}
            # The only runner of jobs: what an earlier process left queued or running is lost.
            ctx["sole_runner_since"] = utcnow()
            background = cls(LocalJobQueue(functions, ctx, tries), None)
            periodic = background._every(table)
            background._periodic = asyncio.create_task(periodic, name="periodic")
        else:
            worker = None
            if settings.api_runs_background_jobs:
                worker = EmbeddedWorker(
                    settings.redis_url, arq_functions(settings), ctx, arq_cron_jobs(settings)
                )
                worker.start()
            background = cls(ArqJobQueue.connect(settings.redis_url), worker)
        ctx["queue"] = background.queue
        return background

    async def _every(self, table: list[Task]) -> None:
        """The periodic tasks, in-process: each enqueued once per period (a run that is still
        going when the next period starts is not doubled: same job id while it runs)."""
        periodic = [t for t in table if t.every_seconds is not None]
        while True:
            now = time.time()
            for t in periodic:
                assert t.every_seconds is not None
                tick = int(now // t.every_seconds)
                try:
                    await self.queue.enqueue(t.name, job_id=f"cron:{t.name}:{tick}")
                except Exception:  # pragma: no cover - the in-process queue does not fail
                    logger.exception("could not start %s", t.name)
            await asyncio.sleep(min((t.every_seconds or 60) for t in periodic) if periodic else 60)

    async def close(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._periodic
        if self._worker is not None:
            await self._worker.close()
        await self.queue.close()
