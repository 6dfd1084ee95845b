"""Search's background tasks (`api.background`): indexing, queries, deletions.

Each reads `ctx["search"]` (`api.search.runtime.Search`), built by the API's lifespan and the
worker's start-up; a process without a store it may write (a worker beside the API's own
embedded store) skips them. Idempotency: `search.index` claims whatever is unindexed, so any
number of runs index each message once (per turn: `search.index:<turn id>`; the sweep every
15 s: `cron:search.index:<tick>`); deletions delete what is there (`search.delete_thread:<id>`).
While the store is down they retry with backoff, and the sweep picks up what they gave up on.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from arq.worker import Retry

from api.background import Task
from api.search.nearest import QUERY_JOB, QUERY_TIMEOUT_SECONDS, LocalNearest
from api.search.store import StoreUnavailable, VectorFilter, VectorPoint

if TYPE_CHECKING:
    from api.search.runtime import Search

logger = logging.getLogger("tollgate.search")

INDEX = "search.index"
DELETE_THREAD = "search.delete_thread"
DELETE_POINTS = "search.delete_points"
CACHE_PUT = "search.cache_put"  # the semantic cache's prompts (`api/gateway/semantic.py`)
SWEEP_SECONDS = 15
MAX_BACKOFF_SECONDS = 30.0


def _search(ctx: dict[str, Any]) -> Search | None:
    search: Search | None = ctx.get("search")
    return search if search is not None and search.indexer is not None else None


def _retry(ctx: dict[str, Any]) -> Retry:
    """1, 2, 4 … 30 s between tries."""
    return Retry(defer=min(2.0 ** (int(ctx.get("job_try", 1)) - 1), MAX_BACKOFF_SECONDS))


async def index(ctx: dict[str, Any]) -> int:
    search = _search(ctx)
    if search is None or search.indexer is None:
        return 0
    try:
        return await search.indexer.index_pending()
    except StoreUnavailable as exc:
        if str(ctx.get("job_id", "")).startswith("cron:"):  # the sweep: the next one comes
            logger.warning("search: the sweep could not index: %s", exc)
            return 0
        raise _retry(ctx) from exc


async def query(
    ctx: dict[str, Any],
    text: str,
    where: dict[str, Any],
    limit: int,
    min_score: float | None,
    collection: str = "search",
) -> list[list[str | float]]:
    """A search's vector side, for an API that holds neither the model nor the client; or the
    semantic cache's (`collection` "cache")."""
    search = _search(ctx)
    if search is None or search.indexer is None:
        raise RuntimeError("search is not set up in this worker (TOLLGATE_QDRANT_URL)")
    store = search.cache_store if collection == "cache" else search.indexer.store
    if store is None:
        return []
    nearest = LocalNearest(search.indexer.embedder, store)
    hits = await nearest.nearest(text, VectorFilter.from_dict(where), limit, min_score)
    return [[str(hit.id), hit.score] for hit in hits]


async def delete_thread(ctx: dict[str, Any], tenant_id: str, thread_id: str) -> None:
    search = _search(ctx)
    if search is None or search.store is None:
        return
    try:
        await search.store.delete_where(uuid.UUID(tenant_id), uuid.UUID(thread_id))
    except StoreUnavailable as exc:
        raise _retry(ctx) from exc


async def delete_points(ctx: dict[str, Any], ids: list[str], collection: str = "search") -> None:
    """Points of search's store, or (`collection` "cache") of the semantic cache's."""
    search = _search(ctx)
    if search is None:
        return
    store = search.cache_store if collection == "cache" else search.store
    if store is None:
        return
    try:
        await store.delete_points([uuid.UUID(i) for i in ids])
    except StoreUnavailable as exc:
        raise _retry(ctx) from exc


async def cache_put(ctx: dict[str, Any], text: str, point_id: str, payload: dict[str, Any]) -> None:
    """Embed a prompt the semantic cache keeps and store its vector."""
    search = _search(ctx)
    if search is None or search.indexer is None or search.cache_store is None:
        return
    embedder, store = search.indexer.embedder, search.cache_store
    try:
        vector = (await embedder.embed([text]))[0]
        await store.ensure(len(vector))
        await store.upsert([VectorPoint(uuid.UUID(point_id), vector, payload)])
    except StoreUnavailable as exc:
        raise _retry(ctx) from exc


def tasks() -> list[Task]:
    return [
        # keep_result 0: nobody awaits these, and arq would keep a result per turn for an hour.
        Task(INDEX, index, timeout_seconds=600, max_tries=8, every_seconds=SWEEP_SECONDS,
             keep_result_seconds=0),
        # Awaited at once: its result is kept only as long as the caller may take to read it.
        Task(QUERY_JOB, query, timeout_seconds=QUERY_TIMEOUT_SECONDS + 30, max_tries=1,
             keep_result_seconds=QUERY_TIMEOUT_SECONDS + 30),
        Task(DELETE_THREAD, delete_thread, timeout_seconds=60, max_tries=10,
             keep_result_seconds=0),
        Task(DELETE_POINTS, delete_points, timeout_seconds=60, max_tries=5,
             keep_result_seconds=0),
        Task(CACHE_PUT, cache_put, timeout_seconds=120, max_tries=5, keep_result_seconds=0),
    ]  # fmt: skip
