"""The vector store, chosen once at start-up (SPEC §1), like the counter store and the queue.

One collection of thread messages: the point id is the message id, so indexing a message again
replaces its point (never a second one); the payload is `tenant_id, key_id, thread_id,
message_id, role, created_at` (unix seconds, for range filters), with payload indexes on
`tenant_id` (Qdrant's tenant index), `key_id` and `thread_id`. Every query is filtered by
tenant; the caller adds the key for a standard key.

- `QdrantStore`: a Qdrant server (`TOLLGATE_QDRANT_URL`), through qdrant-client's
  `AsyncQdrantClient`; `":memory:"` is the same client in local mode, in memory and in this
  process only (tests).
- `EdgeStore` (`api.search.edge`): the embedded default, Qdrant's engine in this process with
  its files in the data dir (docs/decisions/0003-embedded-vector-store.md).

Whatever goes wrong reaching the store is `StoreUnavailable`; a collection that does not exist
yet (nothing indexed) answers empty.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

logger = logging.getLogger("tollgate.search")

COLLECTION = "tollgate_messages"
MEMORY = ":memory:"
INDEXED_FIELDS = ("tenant_id", "key_id", "thread_id")


class StoreUnavailable(Exception):
    """The vector store could not be reached, or failed the operation."""


@dataclass(frozen=True, slots=True)
class VectorPoint:
    id: uuid.UUID
    vector: list[float]
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """What a query may see: always one tenant; a standard key adds its own key."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID | None = None
    thread_id: uuid.UUID | None = None
    role: str | None = None
    start: float | None = None  # created_at, unix seconds, inclusive
    end: float | None = None
    group: str | None = None  # the semantic cache's request group (`api/gateway/semantic.py`)

    def to_dict(self) -> dict[str, str | float | None]:
        """Primitives, for a job's arguments."""
        return {
            "tenant_id": str(self.tenant_id),
            "key_id": str(self.key_id) if self.key_id else None,
            "thread_id": str(self.thread_id) if self.thread_id else None,
            "role": self.role, "start": self.start, "end": self.end, "group": self.group,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VectorFilter:
        ids = {k: uuid.UUID(raw[k]) if raw.get(k) else None for k in ("key_id", "thread_id")}
        return cls(uuid.UUID(raw["tenant_id"]), **ids, role=raw.get("role"),
                   start=raw.get("start"), end=raw.get("end"), group=raw.get("group"))  # fmt: skip

    def matches(self) -> list[tuple[str, str]]:
        pairs = [("tenant_id", str(self.tenant_id))]
        for name in ("key_id", "thread_id", "role", "group"):
            value = getattr(self, name)
            if value is not None:
                pairs.append((name, str(value)))
        return pairs


@dataclass(frozen=True, slots=True)
class VectorHit:
    id: uuid.UUID
    score: float


class VectorStore(Protocol):
    # Whether other processes see the same points (a server): only then may a worker index.
    shared: bool

    async def ensure(self, dimensions: int) -> None:
        """Create the collection and its payload indexes unless they exist."""
        ...

    async def upsert(self, points: Sequence[VectorPoint]) -> None: ...

    async def delete_points(self, ids: Sequence[uuid.UUID]) -> None: ...

    async def delete_where(self, tenant_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> None:
        """Every point of the tenant, or of one of its threads."""
        ...

    async def query(
        self, vector: list[float], where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]: ...

    async def count(self, tenant_id: uuid.UUID | None = None) -> int: ...

    async def drop(self) -> None:
        """Remove the collection (a reindex of everything, e.g. after the model changed)."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers."""
        ...

    async def close(self) -> None: ...


class QdrantStore:
    """A Qdrant server through qdrant-client's `AsyncQdrantClient` (REST)."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout_seconds: int = 5,
        collection: str = COLLECTION,
    ) -> None:
        self.collection = collection
        self.url = url
        self._api_key = api_key
        self._timeout = timeout_seconds
        self._memory = url == MEMORY
        self._qdrant: Any = None  # the client, made on first use (see `_client`)
        self._ready = False  # the collection and its indexes exist (as far as we know)

    @property
    def _client(self) -> Any:
        """qdrant-client, imported and connected on first use: a process that only pings
        (an API whose workers do the rest) never pays its ~47 MB (measured)."""
        if self._qdrant is None:
            from qdrant_client import AsyncQdrantClient

            if self._memory:
                self._qdrant = AsyncQdrantClient(location=MEMORY)
            else:  # no version check: it is a blocking request in the constructor
                self._qdrant = AsyncQdrantClient(
                    url=self.url, api_key=self._api_key, timeout=self._timeout,
                    check_compatibility=False,
                )  # fmt: skip
        return self._qdrant

    async def _call(self, what: str, operation: Any) -> Any:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            return await operation
        except UnexpectedResponse as exc:
            if exc.status_code == 404:
                self._ready = False
                raise _Missing from exc
            logger.warning("qdrant: %s answered %s: %s", what, exc.status_code, exc.content[:300])
            raise StoreUnavailable(f"Qdrant answered {exc.status_code} to {what}.") from exc
        except (ResponseHandlingException, OSError, TimeoutError) as exc:
            logger.warning("qdrant: %s failed: %r", what, exc)
            raise StoreUnavailable(f"Qdrant could not be reached ({what}).") from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("httpx", "httpcore")):
                raise StoreUnavailable(f"Qdrant could not be reached ({what}).") from exc
            raise

    async def ensure(self, dimensions: int) -> None:
        if self._ready:
            return
        from qdrant_client import models

        client, name = self._client, self.collection
        if not await self._call("collection_exists", client.collection_exists(name)):
            # Qdrant's multitenancy layout: no global graph, one per tenant (payload_m).
            await self._call(
                "create_collection",
                client.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=dimensions, distance=models.Distance.COSINE
                    ),
                    hnsw_config=models.HnswConfigDiff(m=0, payload_m=16),
                ),
            )
            if not self._memory:  # local mode ignores payload indexes (and warns)
                for field in INDEXED_FIELDS:
                    schema = models.KeywordIndexParams(
                        type=models.KeywordIndexType.KEYWORD, is_tenant=field == "tenant_id"
                    )
                    await self._call(
                        "create_payload_index",
                        client.create_payload_index(name, field, field_schema=schema, wait=True),
                    )
        self._ready = True

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        from qdrant_client import models

        structs = [models.PointStruct(id=str(p.id), vector=p.vector, payload=p.payload)
                   for p in points]  # fmt: skip
        await self._call("upsert", self._client.upsert(self.collection, structs, wait=True))

    async def delete_points(self, ids: Sequence[uuid.UUID]) -> None:
        from qdrant_client import models

        if not ids or not await self._exists():
            return
        selector = models.PointIdsList(points=[str(i) for i in ids])
        await self._missing_ok("delete", self._client.delete(self.collection, selector, wait=True))

    async def delete_where(self, tenant_id: uuid.UUID, thread_id: uuid.UUID | None = None) -> None:
        from qdrant_client import models

        if not await self._exists():
            return
        where = VectorFilter(tenant_id=tenant_id, thread_id=thread_id)
        selector = models.FilterSelector(filter=_filter(where))
        await self._missing_ok("delete", self._client.delete(self.collection, selector, wait=True))

    async def _exists(self) -> bool:
        """Checked until the collection is seen; afterwards a 404 says it went away."""
        if not self._ready:
            exists = self._client.collection_exists(self.collection)
            self._ready = bool(await self._call("collection_exists", exists))
        return self._ready

    async def query(
        self, vector: list[float], where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]:
        if not await self._exists():
            return []
        try:
            response = await self._call(
                "query",
                self._client.query_points(
                    self.collection, query=vector, query_filter=_filter(where), limit=limit,
                    score_threshold=min_score, with_payload=False,
                ),
            )  # fmt: skip
        except _Missing:
            return []
        return [VectorHit(uuid.UUID(str(p.id)), float(p.score)) for p in response.points]

    async def count(self, tenant_id: uuid.UUID | None = None) -> int:
        if not await self._exists():
            return 0
        where = _filter(VectorFilter(tenant_id)) if tenant_id is not None else None
        try:
            result = await self._call(
                "count", self._client.count(self.collection, count_filter=where, exact=True)
            )
        except _Missing:
            return 0
        return int(result.count)

    async def drop(self) -> None:
        drop = self._client.delete_collection(self.collection)
        await self._missing_ok("delete_collection", drop)
        self._ready = False

    async def ping(self) -> None:
        """Qdrant's own readiness endpoint, over plain httpx (no client library needed)."""
        if self._memory:
            return
        headers = {"api-key": self._api_key} if self._api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(self.url.rstrip("/") + "/readyz", headers=headers)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"Qdrant could not be reached: {exc!r}") from exc
        if response.status_code != 200:
            raise StoreUnavailable(f"Qdrant is not ready ({response.status_code}).")

    async def close(self) -> None:
        if self._qdrant is not None:
            await self._qdrant.close()

    async def _missing_ok(self, what: str, operation: Any) -> None:
        with contextlib.suppress(_Missing):
            await self._call(what, operation)


class _Missing(Exception):
    """The collection does not exist (yet)."""


def _filter(where: VectorFilter) -> Any:
    from qdrant_client import models

    must: list[Any] = [
        models.FieldCondition(key=key, match=models.MatchValue(value=value))
        for key, value in where.matches()
    ]
    if where.start is not None or where.end is not None:
        must.append(
            models.FieldCondition(key="created_at", range=models.Range(gte=where.start,
                                                                       lte=where.end))
        )  # fmt: skip
    return models.Filter(must=must)
