"""Both vector stores keep the same contract: Qdrant Edge (the embedded default) and a Qdrant
server through `AsyncQdrantClient`, both over HTTP (a loopback Qdrant answered by qdrant-client's
local mode) and in its in-memory local mode. Vectors are made up here; no model is loaded."""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from api.search.edge import EdgeStore
from api.search.store import (
    COLLECTION,
    QdrantStore,
    StoreUnavailable,
    VectorFilter,
    VectorPoint,
    VectorStore,
)
from tests.fakes.qdrant import FakeQdrant

DIMENSIONS = 8
TENANTS = [uuid.UUID(int=1), uuid.UUID(int=2)]
KEYS = {t: [uuid.uuid4(), uuid.uuid4()] for t in TENANTS}


def _vector(rng: random.Random) -> list[float]:
    raw = [rng.uniform(-1, 1) for _ in range(DIMENSIONS)]
    norm = sum(x * x for x in raw) ** 0.5
    return [x / norm for x in raw]


@pytest.fixture(scope="module")
def fake_qdrant() -> Iterator[FakeQdrant]:
    server = FakeQdrant().start()
    yield server
    server.stop()


@pytest.fixture(params=["edge", "server", "memory"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, fake_qdrant: FakeQdrant
) -> AsyncIterator[VectorStore]:
    built: VectorStore
    if request.param == "edge":
        built = EdgeStore(tmp_path / "vectors")
    elif request.param == "server":
        fake_qdrant.client.delete_collection(COLLECTION)
        built = QdrantStore(fake_qdrant.url)
    else:
        built = QdrantStore(":memory:")
    yield built
    await built.close()


def _points(rng: random.Random) -> list[VectorPoint]:
    """Per tenant and key: two threads of three messages (user, assistant, tool)."""
    points = []
    moment = 1_700_000_000.0
    for tenant in TENANTS:
        for key in KEYS[tenant]:
            for _ in range(2):
                thread = uuid.uuid4()
                for role in ("user", "assistant", "tool"):
                    moment += 60
                    point_id = uuid.uuid4()
                    payload = {
                        "tenant_id": str(tenant), "key_id": str(key), "thread_id": str(thread),
                        "message_id": str(point_id), "role": role, "created_at": moment,
                    }  # fmt: skip
                    points.append(VectorPoint(point_id, _vector(rng), payload))
    return points


def _ids(points: list[VectorPoint], **match: str) -> set[uuid.UUID]:
    return {p.id for p in points if all(p.payload[k] == v for k, v in match.items())}


class TestContract:
    async def test_empty_store_answers_empty(self, store: VectorStore):
        await store.ping()
        assert await store.count() == 0
        where = VectorFilter(TENANTS[0])
        assert await store.query([1.0] + [0.0] * 7, where, 10, None) == []
        await store.delete_points([uuid.uuid4()])
        await store.delete_where(TENANTS[0])

    async def test_filters_keep_tenants_keys_threads_and_roles_apart(self, store: VectorStore):
        rng = random.Random(7)
        points = _points(rng)
        await store.ensure(DIMENSIONS)
        await store.ensure(DIMENSIONS)  # idempotent
        await store.upsert(points)
        assert await store.count() == len(points)
        assert await store.count(TENANTS[0]) == len(points) // 2
        probe = points[0].vector
        for tenant in TENANTS:
            found = await store.query(probe, VectorFilter(tenant), 100, None)
            assert {h.id for h in found} == _ids(points, tenant_id=str(tenant))
            key = KEYS[tenant][1]
            found = await store.query(probe, VectorFilter(tenant, key_id=key), 100, None)
            assert {h.id for h in found} == _ids(points, key_id=str(key))
        # A key of another tenant matches nothing: the tenant is always in the filter.
        crossed = VectorFilter(TENANTS[0], key_id=KEYS[TENANTS[1]][0])
        assert await store.query(probe, crossed, 100, None) == []
        thread = points[4].payload["thread_id"]
        found = await store.query(probe, VectorFilter(TENANTS[0], thread_id=thread), 100, None)
        assert {h.id for h in found} == _ids(points, thread_id=thread)
        tools = await store.query(probe, VectorFilter(TENANTS[1], role="tool"), 100, None)
        assert {h.id for h in tools} == _ids(points, tenant_id=str(TENANTS[1]), role="tool")
        window = VectorFilter(TENANTS[0], start=points[2].payload["created_at"],
                              end=points[4].payload["created_at"])  # fmt: skip
        assert {h.id for h in await store.query(probe, window, 100, None)} == {
            p.id for p in points[2:5]
        }
        # Nearest first; the point itself scores 1; min_score cuts the rest.
        ranked = await store.query(probe, VectorFilter(TENANTS[0]), 3, None)
        assert len(ranked) == 3
        assert ranked[0].id == points[0].id
        assert ranked[0].score == pytest.approx(1.0, abs=1e-4)
        assert ranked[0].score >= ranked[1].score >= ranked[2].score
        alone = await store.query(probe, VectorFilter(TENANTS[0]), 10, 0.9999)
        assert [h.id for h in alone] == [points[0].id]

    async def test_writing_a_point_again_replaces_it_and_deletes_delete(self, store: VectorStore):
        rng = random.Random(8)
        points = _points(rng)
        await store.ensure(DIMENSIONS)
        await store.upsert(points)
        moved = VectorPoint(points[0].id, points[1].vector, points[0].payload)
        await store.upsert([moved])
        assert await store.count() == len(points)
        top = await store.query(points[1].vector, VectorFilter(TENANTS[0]), 2, None)
        assert {h.id for h in top} == {points[0].id, points[1].id}
        await store.delete_points([points[0].id, points[1].id])
        assert await store.count() == len(points) - 2
        thread = points[3].payload["thread_id"]
        await store.delete_where(TENANTS[0], uuid.UUID(thread))
        assert await store.count() == len(points) - 2 - 3
        await store.delete_where(TENANTS[1])
        assert await store.count(TENANTS[1]) == 0
        assert await store.count(TENANTS[0]) == len(points) // 2 - 5
        await store.drop()
        assert await store.count() == 0
        await store.ensure(DIMENSIONS)
        await store.upsert(points[:1])
        assert await store.count() == 1


class TestEdge:
    async def test_points_survive_a_reopen_and_one_process_holds_the_store(self, tmp_path: Path):
        rng = random.Random(9)
        points = _points(rng)
        first = EdgeStore(tmp_path / "vectors")
        await first.ensure(DIMENSIONS)
        await first.upsert(points)
        second = EdgeStore(tmp_path / "vectors")
        with pytest.raises(StoreUnavailable, match="in use by another process"):
            await second.ping()
        await first.close()
        await second.ping()
        assert await second.count() == len(points)
        with pytest.raises(StoreUnavailable, match="reindex"):
            await second.ensure(DIMENSIONS * 2)  # another model's vectors
        await second.close()


class TestServer:
    async def test_the_collection_is_built_for_tenants(self, fake_qdrant: FakeQdrant):
        fake_qdrant.client.delete_collection(COLLECTION)
        store = QdrantStore(fake_qdrant.url)
        await store.ensure(DIMENSIONS)
        assert fake_qdrant.hnsw == {"m": 0, "payload_m": 16}
        assert fake_qdrant.indexes == {
            "tenant_id": {"type": "keyword", "is_tenant": True},
            "key_id": {"type": "keyword", "is_tenant": False},
            "thread_id": {"type": "keyword", "is_tenant": False},
        }
        await store.close()

    async def test_an_unreachable_server_is_store_unavailable_until_it_returns(
        self, fake_qdrant: FakeQdrant
    ):
        fake_qdrant.client.delete_collection(COLLECTION)
        store = QdrantStore(fake_qdrant.url, timeout_seconds=2)
        points = _points(random.Random(10))
        await store.ensure(DIMENSIONS)
        await store.upsert(points[:3])
        fake_qdrant.go_down()
        try:
            for operation in (
                store.ping(),
                store.upsert(points[3:]),
                store.query(points[0].vector, VectorFilter(TENANTS[0]), 5, None),
                store.count(),
                store.delete_where(TENANTS[0]),
            ):
                with pytest.raises(StoreUnavailable):
                    await operation
        finally:
            fake_qdrant.come_back()
        await store.upsert(points[3:])
        assert await store.count() == len(points)
        await store.close()

    async def test_nothing_listening_is_store_unavailable(self):
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = QdrantStore(f"http://127.0.0.1:{port}", timeout_seconds=1)
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.query([0.0] * DIMENSIONS, VectorFilter(TENANTS[0]), 5, None)
        await store.close()
