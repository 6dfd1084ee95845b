"""The embedded default's vector store: Qdrant's own engine in this process (`qdrant-edge-py`),
its files in `<data dir>/vectors`.

Chosen over qdrant-client's local mode by measurement (docs/decisions/0003-embedded-vector-
store.md, `bench/search.py`): local mode is brute force in Python and ignores payload indexes,
Edge filters through them in Rust. The shard is one process's: a second process (the reindex
command while `tollgate serve` runs) gets `StoreUnavailable` saying so. Its calls are blocking,
so they run in threads.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from api.search.store import INDEXED_FIELDS, StoreUnavailable, VectorFilter, VectorHit, VectorPoint

logger = logging.getLogger("tollgate.search")

T = TypeVar("T")
_CONFIG_FILE = "edge_config.json"


class EdgeStore:
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._shard: Any = None
        self._open_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(2)

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return call()
            except StoreUnavailable:
                raise
            except Exception as exc:  # the engine raises plain exceptions with a message
                logger.warning("vector store: %s failed: %s", what, exc)
                raise StoreUnavailable(f"The embedded vector store failed ({what}): {exc}") from exc

        return await anyio.to_thread.run_sync(guarded, limiter=self._limiter)

    def _dimensions_on_disk(self) -> int | None:
        config = self.path / _CONFIG_FILE
        if not config.exists():
            return None
        size: int = json.loads(config.read_text())["vectors"][""]["size"]
        return size

    def _open(self, dimensions: int | None) -> Any:
        """The shard, opened (or, given `dimensions`, created) on first use; None while there
        is none and nothing to create it with."""
        with self._open_lock:
            if self._shard is not None:
                return self._shard
            import qdrant_edge as edge

            if self._dimensions_on_disk() is not None:
                try:
                    self._shard = edge.EdgeShard.load(str(self.path))
                except Exception as exc:
                    if "WouldBlock" in str(exc):  # the WAL's lock: another process has it open
                        raise StoreUnavailable(
                            f"The vector store in {self.path} is in use by another process."
                        ) from exc
                    raise
                return self._shard
            if dimensions is None:
                return None
            config = edge.EdgeConfig(
                vectors=edge.EdgeVectorParams(size=dimensions, distance=edge.Distance.Cosine),
                # Qdrant's multitenancy layout: no global graph, one per tenant when optimized.
                hnsw_config=edge.HnswIndexConfig(
                    m=0, ef_construct=100, full_scan_threshold=10_000, payload_m=16
                ),
            )
            self.path.mkdir(parents=True, exist_ok=True)
            shard = edge.EdgeShard.create(str(self.path), config)
            for name in INDEXED_FIELDS:
                params = edge.KeywordIndexParams(is_tenant=name == "tenant_id")
                shard.update(edge.UpdateOperation.create_field_index(name, params))
            self._shard = shard
            return shard

    async def ensure(self, dimensions: int) -> None:
        def ensure() -> None:
            on_disk = self._dimensions_on_disk()
            if on_disk is not None and on_disk != dimensions:
                raise StoreUnavailable(
                    f"The vector index holds {on_disk}-dimensional vectors and the embedding "
                    f"model makes {dimensions}: run `tollgate search reindex`."
                )
            self._open(dimensions)

        await self._run("open", ensure)

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        import qdrant_edge as edge

        def upsert() -> None:
            shard = self._open(len(points[0].vector))
            shard.update(edge.UpdateOperation.upsert_points(
                [edge.Point(p.id, p.vector, p.payload) for p in points]
            ))  # fmt: skip

        if points:
            await self._run("upsert", upsert)

    async def delete_points(self, ids: Sequence[uuid.UUID]) -> None:
        import qdrant_edge as edge

        def delete() -> None:
            shard = self._open(None)
            if shard is not None:
                shard.update(edge.UpdateOperation.delete_points(list(ids)))

        if ids:
            await self._run("delete", delete)

    async def delete_where(self, tenant_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> None:
        import qdrant_edge as edge

        where = _filter(VectorFilter(tenant_id=tenant_id, thread_id=thread_id))

        def delete() -> None:
            shard = self._open(None)
            if shard is not None:
                shard.update(edge.UpdateOperation.delete_points_by_filter(where))

        await self._run("delete", delete)

    async def query(
        self, vector: list[float], where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]:
        import qdrant_edge as edge

        request = edge.QueryRequest(
            limit=limit, query=edge.Query.Nearest(vector), filter=_filter(where),
            score_threshold=min_score, with_payload=False, with_vector=False,
        )  # fmt: skip

        def query() -> list[VectorHit]:
            shard = self._open(None)
            if shard is None:
                return []
            return [VectorHit(_uuid(p.id), float(p.score)) for p in shard.query(request)]

        return await self._run("query", query)

    async def count(self, tenant_id: uuid.UUID | None = None) -> int:
        import qdrant_edge as edge

        where = _filter(VectorFilter(tenant_id)) if tenant_id is not None else None

        def count() -> int:
            shard = self._open(None)
            return 0 if shard is None else int(shard.count(edge.CountRequest(True, where)))

        return await self._run("count", count)

    async def drop(self) -> None:
        def drop() -> None:
            with self._open_lock:
                if self._shard is not None:
                    self._shard.close()
                    self._shard = None
                shutil.rmtree(self.path, ignore_errors=True)

        await self._run("drop", drop)

    async def ping(self) -> None:
        await self._run("open", lambda: self._open(None))

    async def close(self) -> None:
        def close() -> None:
            with self._open_lock:
                if self._shard is not None:
                    self._shard.flush()
                    self._shard.close()
                    self._shard = None

        await self._run("close", close)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _filter(where: VectorFilter) -> Any:
    import qdrant_edge as edge

    must: list[Any] = [
        edge.FieldCondition(key=key, match=edge.MatchValue(value)) for key, value in where.matches()
    ]
    if where.start is not None or where.end is not None:
        must.append(
            edge.FieldCondition(key="created_at", range=edge.RangeFloat(gte=where.start,
                                                                        lte=where.end))
        )  # fmt: skip
    return edge.Filter(must=must)
