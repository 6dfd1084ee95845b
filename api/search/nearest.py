"""The messages nearest a query: the query embedded, then the vector store asked.

With Redis and a Qdrant server both happen in a worker (`search.query`, one round trip through
the job queue), so the API process imports neither torch and the model (~470 MB) nor
qdrant-client (~47 MB), and stays within SPEC §8's 200 MB with search on; the round trip
measured 42 ms at p50 against 12 ms embedding in process (docs/decisions/0003-embedded-vector-
store.md). Without Redis, or with the embedded store, it all happens in this process.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from api.kit.jobs import JobQueue
from api.search.embedder import Embedder
from api.search.store import VectorFilter, VectorHit, VectorStore

QUERY_JOB = "search.query"
QUERY_TIMEOUT_SECONDS = 30.0  # a worker that has not loaded the model yet takes ~10-20 s


class Nearest(Protocol):
    async def nearest(
        self, text: str, where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]: ...


@dataclass(frozen=True, slots=True)
class LocalNearest:
    embedder: Embedder
    store: VectorStore

    async def nearest(
        self, text: str, where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]:
        vector = await self.embedder.embed_query(text)
        return await self.store.query(vector, where, limit, min_score)


@dataclass(frozen=True, slots=True)
class WorkerNearest:
    queue: JobQueue
    collection: str = "search"  # or "cache": the semantic cache's prompts

    async def nearest(
        self, text: str, where: VectorFilter, limit: int, min_score: float | None
    ) -> list[VectorHit]:
        found: list[list[str | float]] = await self.queue.run(
            QUERY_JOB, text, where.to_dict(), limit, min_score, self.collection,
            job_id=f"{QUERY_JOB}:{uuid.uuid4()}", timeout_seconds=QUERY_TIMEOUT_SECONDS,
        )  # fmt: skip
        return [VectorHit(uuid.UUID(str(point)), float(score)) for point, score in found]
