"""The usage ledger's write path (SPEC §7): an accepted request's usage event is durable before
the client sees the end of its response, and reaches the database exactly once.

Two implementations, chosen once at start-up:

- `RedisLedger` (production): one Lua call settles the request's cap counters *and* appends
  its event to the `tollgate:ledger` stream, so counters and ledger cannot disagree. A
  `LedgerDrain` (in `tollgate worker`, and in the API process unless told otherwise) moves the
  stream into the database in batches; inserts ignore an event id already present, so a drain
  that dies mid-batch and runs again counts nothing twice.
- `DatabaseLedger` (embedded default, or no Redis): events are group-committed: the request
  waits for the transaction that carries its event, and events that arrive meanwhile share the
  next one.

Refusals (a bad body, a blocked model) cost nothing and hold no counter: `record()` writes them
without making the request wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.kit.counters import CounterStore, RedisCounterStore, Settlement
from api.kit.time import utcnow
from api.usage.rollups import insert_events

logger = logging.getLogger("tollgate.usage")

STREAM = "tollgate:ledger"
BATCH_SIZE = 500
RETRY_DELAY_SECONDS = 1.0
CLAIM_EVERY_SECONDS = 10.0
LINGER_SECONDS = 0.05
# A request waits this long for its event's transaction; past it the event stays queued (and
# is written once the database answers) and the response goes out.
COMMIT_TIMEOUT_SECONDS = 10.0


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
    # Per-unit use (SPEC §5.12): seconds of audio, characters of speech, images.
    audio_seconds: int = 0
    characters: int = 0
    images: int = 0
    cost_micros: int = 0
    # A response cache hit: its kind ("exact", "semantic"), 1, the tokens it did not send
    # upstream and what they would have cost.
    cache: str | None = None
    cache_hits: int = 0
    saved_tokens: int = 0
    saved_micros: int = 0
    latency_ms: int = 0
    tool_calls: int = 0
    estimated: bool = False
    error_code: str | None = None
    # Resilience: attempts made, the upstream account that answered, the "provider/model" a
    # cross-provider failover came from, and every attempt as JSON when there was more than one.
    attempts: int | None = None
    account: str | None = None
    failover_from: str | None = None
    trace: str | None = None
    # The request's trace (`api/gateway/traces.py`): its id, its steps and every attempt as
    # JSON; written to `request_traces` with the event, in the same insert.
    trace_id: str | None = None
    steps: str | None = None
    trace_attempts: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)


_FIELDS = tuple(f.name for f in fields(UsageRecord))
_UUIDS = ("id", "tenant_id", "key_id")


def encode(event: UsageRecord) -> bytes:
    return orjson.dumps(event)


def decode(raw: bytes) -> dict[str, Any]:
    """A stream entry back into a row; unknown fields (from a newer writer) are dropped."""
    data = orjson.loads(raw)
    row = {name: data[name] for name in _FIELDS if name in data}
    for name in _UUIDS:
        row[name] = uuid.UUID(row[name])
    row["created_at"] = datetime.fromisoformat(row["created_at"])
    return row


class Ledger(Protocol):
    async def commit(self, event: UsageRecord, settlements: list[Settlement]) -> list[int | None]:
        """Make the event durable and settle its counters; returns each counter's new value."""
        ...

    def record(self, event: UsageRecord) -> None:
        """Write an event that settles nothing, without waiting (refusals)."""
        ...

    async def flush(self) -> None:
        """Return once every event committed or recorded so far is in the database."""
        ...

    def start(self) -> None: ...

    async def close(self) -> None: ...


class BatchWriter:
    """Inserts events in batches. `write()` waits for the batch carrying the event (group
    commit: no lingering, whatever queued up during the previous transaction forms the next)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None] | None]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    def write(self, event: UsageRecord) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((_row(event), done))
        return done

    def record(self, event: UsageRecord) -> None:
        self._queue.put_nowait((_row(event), None))

    async def flush(self) -> None:
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
            while len(batch) < BATCH_SIZE and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await write_rows(self._sessionmaker, [row for row, _ in batch])
            for _, done in batch:
                if done is not None and not done.done():
                    done.set_result(None)
                self._queue.task_done()


async def _written(done: asyncio.Future[None], event: UsageRecord) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(done), COMMIT_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.error("usage event %s is not written yet; answering anyway", event.id)


def _row(event: UsageRecord) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _FIELDS}


async def write_rows(
    sessionmaker: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Insert idempotently, retrying while the database is unreachable. A row the database
    refuses never blocks the others: refused rows are logged and returned."""
    while True:
        try:
            async with sessionmaker() as session, session.begin():
                await insert_events(session, rows)
            return []
        except (OperationalError, InterfaceError):  # restarting, failing over: keep trying
            logger.exception("writing %d usage events failed; retrying", len(rows))
            await asyncio.sleep(RETRY_DELAY_SECONDS)
        except DBAPIError:
            if len(rows) == 1:
                logger.exception("the database refused usage event %s", rows[0])
                return rows
            middle = len(rows) // 2
            return await write_rows(sessionmaker, rows[:middle]) + await write_rows(
                sessionmaker, rows[middle:]
            )


class DatabaseLedger:
    """No Redis: counters live in this process, events go straight to the database."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], counters: CounterStore):
        self._writer = BatchWriter(sessionmaker)
        self._counters = counters

    def start(self) -> None:
        self._writer.start()

    async def commit(self, event: UsageRecord, settlements: list[Settlement]) -> list[int | None]:
        after = await self._counters.release(settlements) if settlements else []
        await _written(self._writer.write(event), event)
        return after

    def record(self, event: UsageRecord) -> None:
        self._writer.record(event)

    async def flush(self) -> None:
        await self._writer.flush()

    async def close(self) -> None:
        await self._writer.close()


class RedisLedger:
    """Events go to the `tollgate:ledger` stream in the same Lua call that settles counters.

    When Redis fails at that moment the event is written to the database directly, and the
    counters it would have moved are dropped as soon as Redis answers again, so they are
    recounted from the ledger instead of undercounting.
    """

    def __init__(
        self,
        redis: Redis,
        counters: RedisCounterStore,
        sessionmaker: async_sessionmaker[AsyncSession],
        drain: LedgerDrain,
    ) -> None:
        self._redis = redis
        self._counters = counters
        self._fallback = BatchWriter(sessionmaker)
        self._drain = drain
        self._stale: set[str] = set()
        self._pending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._fallback.start()

    async def commit(self, event: UsageRecord, settlements: list[Settlement]) -> list[int | None]:
        try:
            after = await self._counters.release(settlements, journal=(STREAM, encode(event)))
        except RedisError:
            logger.exception("Redis refused usage event %s; writing it to the database", event.id)
            self._stale.update(item.counter for item in settlements)
            await _written(self._fallback.write(event), event)
            return [None] * len(settlements)
        if self._stale:
            await self._forget_stale()
        return after

    async def _forget_stale(self) -> None:
        stale, self._stale = self._stale, set()
        try:
            await self._counters.delete(sorted(stale))
        except RedisError:
            self._stale |= stale

    def record(self, event: UsageRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._append(event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _append(self, event: UsageRecord) -> None:
        try:
            await self._counters.release([], journal=(STREAM, encode(event)))
        except RedisError:
            logger.exception("Redis refused usage event %s; writing it to the database", event.id)
            self._fallback.record(event)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self._fallback.flush()
        await self._drain.until_empty()

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self._fallback.close()


class LedgerDrain:
    """Moves `tollgate:ledger` into the database: read a batch as a consumer group member,
    insert it idempotently, then acknowledge and delete it. Entries a dead consumer read but
    never acknowledged are claimed after `claim_idle_ms`; a consumer that restarts under the
    same name, or recovers from an outage, finishes its own first. Rows the database refuses
    go to `tollgate:ledger:dead`.
    """

    GROUP = "ledger"

    def __init__(
        self,
        redis: Redis,
        sessionmaker: async_sessionmaker[AsyncSession],
        consumer: str,
        *,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self._redis = redis
        self._sessionmaker = sessionmaker
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._ready = False
        self.drained = 0  # events this drain has written (for progress and tests)

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self._redis.xgroup_create(STREAM, self.GROUP, id="0", mkstream=True)
        except RedisError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def run(self) -> None:
        """Drain until cancelled; survives Redis and database outages."""
        resumed = False
        claimed_at = 0.0
        while True:
            try:
                await self._ensure_group()
                if not resumed:  # first what this consumer had read when it last stopped
                    while await self._write(await self._own_pending()):
                        pass
                    resumed = True
                if time.monotonic() - claimed_at > CLAIM_EVERY_SECONDS:
                    claimed_at = time.monotonic()
                    await self._write(await self._claim(self._claim_idle_ms))
                entries = await self._read_new(block_ms=1000)
                if 0 < len(entries) < BATCH_SIZE:
                    # Events are safe in Redis: gather more for one transaction instead of one
                    # each (a transaction costs about as much CPU as a proxied request).
                    await asyncio.sleep(LINGER_SECONDS)
                    entries += await self._read_new(block_ms=None, count=BATCH_SIZE - len(entries))
                await self._write(entries)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("draining the usage ledger failed; retrying")
                # What it had read may not be written or acknowledged (Redis or the database
                # went away mid-batch): its own pending entries first, not after `claim_idle_ms`.
                resumed = False
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def until_empty(self, timeout_seconds: float = 10.0) -> None:
        """Drain everything appended before this call, taking over entries other consumers are
        holding (inserts are idempotent, so doing their work twice is harmless)."""
        await self._ensure_group()
        last = await self._redis.xrevrange(STREAM, count=1)
        if not last:
            return
        target = last[0][0]
        async with asyncio.timeout(timeout_seconds):
            while await self._redis.xrange(STREAM, max=target, count=1):
                await self._write(await self._claim(0))
                await self._write(await self._read_new(block_ms=None))

    async def _own_pending(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self._redis.xreadgroup(
            self.GROUP, self._consumer, {STREAM: "0"}, count=BATCH_SIZE
        )
        return _entries(reply)

    async def _read_new(
        self, block_ms: int | None, count: int = BATCH_SIZE
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self._redis.xreadgroup(
            self.GROUP, self._consumer, {STREAM: ">"}, count=count, block=block_ms
        )
        return _entries(reply)

    async def _claim(self, min_idle_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = await self._redis.xautoclaim(
            STREAM, self.GROUP, self._consumer, min_idle_ms, start_id="0-0", count=BATCH_SIZE
        )
        return [entry for entry in reply[1] if entry[1]]  # deleted entries come back empty

    async def _write(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        if not entries:
            return 0
        rows, ids = [], []
        for entry_id, values in entries:
            ids.append(entry_id)
            try:
                rows.append(decode(values[b"e"]))
            except (KeyError, ValueError, TypeError):
                logger.error("dropping an unreadable ledger entry %s: %r", entry_id, values)
                await self._redis.xadd(f"{STREAM}:dead", {b"e": repr(values).encode()})
        refused = await write_rows(self._sessionmaker, rows) if rows else []
        for row in refused:
            await self._redis.xadd(f"{STREAM}:dead", {b"e": orjson.dumps(row)})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, self.GROUP, *ids)
            pipe.xdel(STREAM, *ids)
            await pipe.execute()
        self.drained += len(rows) - len(refused)
        return len(entries)


def _entries(reply: Iterable[Any] | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
    if not reply:
        return []
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for _, entries in reply:
        out.extend(entry for entry in entries if entry[1])
    return out
