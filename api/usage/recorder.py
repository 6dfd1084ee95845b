"""The usage-event writer: off the response's critical path, lossless on a clean shutdown.

Requests hand events to `record()` (no I/O, no await). A background task writes them in
batches; a failed batch is retried, never dropped. `close()` drains what is queued. Event ids
are chosen by the caller, and inserts ignore an id already present, so a replay is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db import insert_ignoring_conflicts
from api.kit.time import utcnow
from api.usage.models import UsageEvent

logger = logging.getLogger("tollgate.usage")

BATCH_SIZE = 500
# Gather events this long before writing: one transaction per batch instead of per request
# (a transaction costs about a millisecond of CPU, as much as the rest of a proxied request).
LINGER_SECONDS = 0.05
RETRY_DELAY_SECONDS = 1.0


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    tenant_id: uuid.UUID
    key_id: uuid.UUID
    endpoint: str
    model: str
    provider: str
    status: int
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micros: int = 0
    latency_ms: int = 0
    tool_calls: int = 0
    estimated: bool = False
    error_code: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)


_FIELDS = tuple(f.name for f in fields(UsageRecord))


class UsageRecorder:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    def record(self, event: UsageRecord) -> None:
        self._queue.put_nowait(event)

    async def flush(self) -> None:
        """Wait until everything recorded so far is in the database."""
        await self._queue.join()

    async def close(self, timeout_seconds: float = 30.0) -> None:
        try:
            await asyncio.wait_for(self.flush(), timeout_seconds)
        except TimeoutError:
            logger.error("shutting down with %d usage events unwritten", self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
            while len(batch) < BATCH_SIZE:
                if self._queue.empty():
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            await self._write_until_done(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write_until_done(self, batch: list[UsageRecord]) -> None:
        """Retry while the database is unreachable; a row it refuses never blocks the others."""
        while True:
            try:
                await self._write(batch)
                return
            except (OperationalError, InterfaceError):  # restarting, failing over: keep trying
                logger.exception("writing %d usage events failed; retrying", len(batch))
                await asyncio.sleep(RETRY_DELAY_SECONDS)
            except DBAPIError:
                if len(batch) == 1:
                    logger.exception("the database refused usage event %s", batch[0])
                    return
                middle = len(batch) // 2
                await self._write_until_done(batch[:middle])
                await self._write_until_done(batch[middle:])
                return

    async def _write(self, batch: list[UsageRecord]) -> None:
        rows: list[dict[str, Any]] = [
            {name: getattr(event, name) for name in _FIELDS} for event in batch
        ]
        async with self._sessionmaker() as session, session.begin():
            await session.execute(insert_ignoring_conflicts(session, UsageEvent), rows)
