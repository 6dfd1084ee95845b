"""What runs off the request: one table of background tasks, and the queue that runs them.

Each domain contributes its tasks to `tasks()` (tool webhook calls today; search indexing and
async jobs beside them). `tollgate worker` registers the same table with arq, and so does the
API's own worker when it runs background jobs; the embedded default runs the same functions as
tasks of the API process (`LocalJobQueue`). A task reads what it needs from `ctx`, which the
API's lifespan and the worker's start-up build with the same keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.worker import Function, func

from api.kit.jobs import ArqJobQueue, EmbeddedWorker, JobFunction, JobQueue, LocalJobQueue
from api.settings import Settings


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    function: JobFunction
    timeout_seconds: float
    max_tries: int


def tasks() -> list[Task]:
    from api.tool import runner  # the domains import this module's `Task`

    return [runner.TASK]


def arq_functions() -> list[Function]:
    return [
        func(t.function, name=t.name, timeout=t.timeout_seconds, max_tries=t.max_tries)
        for t in tasks()
    ]


class Background:
    """The queue the API enqueues on, and the API's own arq worker when it runs one."""

    def __init__(self, queue: JobQueue, worker: EmbeddedWorker | None) -> None:
        self.queue = queue
        self._worker = worker

    @classmethod
    def start(cls, settings: Settings, ctx: dict[str, Any]) -> Background:
        if not settings.redis_url:
            table = tasks()
            functions = {t.name: t.function for t in table}
            tries = {t.name: t.max_tries for t in table}
            return cls(LocalJobQueue(functions, ctx, tries), None)
        worker = None
        if settings.api_runs_background_jobs:
            worker = EmbeddedWorker(settings.redis_url, arq_functions(), ctx)
            worker.start()
        return cls(ArqJobQueue.connect(settings.redis_url), worker)

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.close()
        await self.queue.close()
