"""Search as a process runs it, chosen once at start-up from the settings (SPEC §1).

| settings | store | tasks, and queries (embedding + lookup) |
|---|---|---|
| `TOLLGATE_QDRANT_URL` and Redis | the Qdrant server | arq workers (a round trip per query) |
| `TOLLGATE_QDRANT_URL`, no Redis | the Qdrant server | this process |
| no URL (the embedded default) | Qdrant Edge in `<data dir>/vectors` | this process |

`TOLLGATE_QDRANT_URL=":memory:"` is qdrant-client's in-memory local mode, behind the server's
code path; every process has its own, so it is for tests (an API that runs its own worker).
The embedded store belongs to one process: with Redis set and no Qdrant URL, search's tasks
still run in the API process, and `tollgate worker` leaves them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.kit.jobs import JobQueue, LocalJobQueue
from api.search import tasks
from api.search.edge import EdgeStore
from api.search.embedder import LocalEmbedder
from api.search.indexer import Indexer
from api.search.nearest import LocalNearest, Nearest, WorkerNearest
from api.search.store import QdrantStore, VectorFilter, VectorHit, VectorStore
from api.settings import Settings

logger = logging.getLogger("tollgate.search")


CACHE_COLLECTION = "tollgate_semantic_cache"


def build_store(settings: Settings, *, cache: bool = False) -> VectorStore:
    """Search's store, or (`cache`) the semantic cache's: the same kind, apart."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        if cache:
            return QdrantStore(settings.qdrant_url, api_key=key, collection=CACHE_COLLECTION)
        return QdrantStore(settings.qdrant_url, api_key=key)
    return EdgeStore(settings.data_dir / ("semantic-cache" if cache else "vectors"))


@dataclass(slots=True)
class Search:
    """`store` is None when search is off; `indexer` when this process may not write it."""

    store: VectorStore | None = None
    indexer: Indexer | None = None
    queue: JobQueue | None = None
    nearest: Nearest | None = None
    # The semantic cache's vectors (`api/gateway/semantic.py`): prompts, not messages.
    cache_store: VectorStore | None = None
    cache_nearest: Nearest | None = None
    _own_queue: LocalJobQueue | None = None
    _sweep: asyncio.Task[None] | None = None
    _warming: asyncio.Task[int] | None = None

    @property
    def enabled(self) -> bool:
        return self.store is not None

    @classmethod
    def build(
        cls,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        worker: bool = False,
    ) -> Search:
        """`worker`: for `tollgate worker`, which indexes only a store other processes share."""
        if not settings.search_enabled or (worker and not settings.qdrant_url):
            return cls()
        store = build_store(settings)
        embedder = LocalEmbedder(settings.embedding_model)
        indexer = Indexer(sessionmaker, store, embedder)
        return cls(store=store, indexer=indexer, cache_store=build_store(settings, cache=True))

    def start(self, settings: Settings, queue: JobQueue) -> None:
        """After the background queue is up: where search's tasks go, how queries are
        embedded, and (for an embedded store beside Redis) its own sweep."""
        if self.store is None or self.indexer is None:
            return
        arq = settings.redis_url is not None
        self.queue = queue
        self.nearest = LocalNearest(self.indexer.embedder, self.store)
        if self.cache_store is not None:
            self.cache_nearest = LocalNearest(self.indexer.embedder, self.cache_store)
        if self.store.shared and arq:
            self.nearest = WorkerNearest(queue)
            self.cache_nearest = WorkerNearest(queue, collection="cache")
        elif arq:  # the store is this process's own: so are its tasks
            table = tasks.tasks()
            self._own_queue = LocalJobQueue(
                {t.name: t.function for t in table}, {"search": self},
                {t.name: t.max_tries for t in table},
            )  # fmt: skip
            self.queue = self._own_queue
            self._sweep = asyncio.create_task(self._sweep_loop(), name="search-sweep")

    def warm_up(self) -> None:
        """Load the model now, in the background (a worker's start-up)."""
        if self.indexer is not None:
            self._warming = asyncio.create_task(self.indexer.embedder.dimensions(), name="model")
            self._warming.add_done_callback(_log_failure)

    async def _sweep_loop(self) -> None:
        while True:
            await self._enqueue(tasks.INDEX, job_id=f"cron:{tasks.INDEX}:{int(time.time())}")
            await asyncio.sleep(tasks.SWEEP_SECONDS)

    async def _enqueue(self, name: str, *args: Any, job_id: str) -> None:
        """Never raises: what is not indexed now, the sweep indexes; what is not deleted now,
        search never shows (every hit is checked against the database)."""
        if self.queue is None:
            return
        try:
            await self.queue.enqueue(name, *args, job_id=job_id)
        except Exception:
            logger.exception("search: could not queue %s", name)

    async def turn_persisted(self, turn_id: uuid.UUID) -> None:
        await self._enqueue(tasks.INDEX, job_id=f"{tasks.INDEX}:{turn_id}")

    async def thread_deleted(self, tenant_id: uuid.UUID, thread_id: uuid.UUID) -> None:
        job_id = f"{tasks.DELETE_THREAD}:{thread_id}"
        await self._enqueue(tasks.DELETE_THREAD, str(tenant_id), str(thread_id), job_id=job_id)

    async def forget(self, ids: list[uuid.UUID]) -> None:
        """Points whose messages are gone (found by a search): removed in the background."""
        job_id = f"{tasks.DELETE_POINTS}:{uuid.uuid4()}"
        await self._enqueue(tasks.DELETE_POINTS, [str(i) for i in ids], job_id=job_id)

    # The semantic cache (`api/gateway/semantic.py`)

    async def nearest_prompt(
        self, text: str, tenant_id: uuid.UUID, group: str, threshold: float
    ) -> VectorHit | None:
        """The stored prompt of this tenant and group closest to `text`, if at `threshold`."""
        if self.cache_nearest is None:
            return None
        where = VectorFilter(tenant_id, group=group)
        hits = await self.cache_nearest.nearest(text, where, 1, threshold)
        return hits[0] if hits else None

    async def remember_prompt(
        self, text: str, point_id: uuid.UUID, tenant_id: uuid.UUID, group: str
    ) -> None:
        """Embed and store a prompt whose answer the cache keeps (in the background)."""
        payload = {"tenant_id": str(tenant_id), "group": group, "created_at": time.time()}
        job_id = f"{tasks.CACHE_PUT}:{point_id}"
        await self._enqueue(tasks.CACHE_PUT, text, str(point_id), payload, job_id=job_id)

    async def forget_prompts(self, ids: list[uuid.UUID]) -> None:
        if ids:
            job_id = f"{tasks.DELETE_POINTS}:{uuid.uuid4()}"
            await self._enqueue(tasks.DELETE_POINTS, [str(i) for i in ids], "cache", job_id=job_id)

    async def stop(self) -> None:
        """Before the background queue closes: no more sweeps, and this process's own tasks
        are cancelled."""
        for task in (self._sweep, self._warming):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._own_queue is not None:
            await self._own_queue.close()

    async def close(self) -> None:
        for store in (self.store, self.cache_store):
            if store is not None:
                await store.close()


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("search: the embedding model could not be loaded", exc_info=error)
