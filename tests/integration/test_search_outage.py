"""Search when Qdrant goes away, and `tollgate search reindex`. The Qdrant here is a loopback
server (tests/fakes/qdrant.py) reached over HTTP by the real client, which can die and return
on the same port; on PostgreSQL + Redis the index tasks run on arq (the API's own worker), on
SQLite in process. The reindex command runs as users run it, in a process of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.search.edge import EdgeStore
from api.search.store import COLLECTION, QdrantStore, VectorStore
from api.settings import Settings
from tests.factories.search import hits, new_thread, search, search_app, send_turn, wait_indexed
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.fakes.qdrant import FakeQdrant

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake_qdrant_server() -> Iterator[FakeQdrant]:
    server = FakeQdrant().start()
    yield server
    server.stop()


@pytest.fixture
def qdrant(fake_qdrant_server: FakeQdrant) -> Iterator[FakeQdrant]:
    fake_qdrant_server.client.delete_collection(COLLECTION)
    yield fake_qdrant_server
    if fake_qdrant_server.down:
        fake_qdrant_server.come_back()


def _message_ids(url: str) -> set[str]:
    """Every thread message with text (all of them here: the mock answers in text)."""
    engine = sa.create_engine(url.replace("sqlite+aiosqlite", "sqlite"))
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id FROM thread_messages")).scalars().all()
    engine.dispose()
    return {str(uuid.UUID(str(row))) for row in rows}


class TestQdrantDown:
    async def test_turns_persist_search_answers_503_and_every_turn_is_indexed_once_after(
        self, settings: Settings, qdrant: FakeQdrant, database_url: str
    ):
        configured = settings.model_copy(update={"search_enabled": True, "qdrant_url": qdrant.url})
        async with search_app(configured) as app:
            client = app.client
            tenant = await create_tenant(client)
            headers = bearer((await create_key(client, tenant, test=True))["secret"])
            thread_id = await new_thread(client, headers)
            await send_turn(client, headers, thread_id, "Which wood is best for a cutting board?")
            await wait_indexed(client, headers, [thread_id])
            qdrant.go_down()
            for text in ("Can I freeze cooked rice safely?",
                         "How do I remove red wine stains from a carpet?",
                         "Why does my cast iron pan rust after washing?"):  # fmt: skip
                await send_turn(client, headers, thread_id, text)
            messages = await client.get(f"/v1/threads/{thread_id}/messages", headers=headers)
            assert len(messages.json()["data"]) == 8  # every turn persisted
            thread = (await client.get(f"/v1/threads/{thread_id}", headers=headers)).json()
            assert thread["indexed"] is False
            refused = await search(client, headers, "wine on the carpet")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "search_unavailable"
            assert refused.headers["x-should-retry"] == "true"
            ready = await client.get("/readyz")
            assert ready.status_code == 200  # the proxy and billing still serve
            assert ready.json()["status"] == "degraded"
            assert ready.json()["checks"]["qdrant"] == "unreachable"
            qdrant.come_back()
            await wait_indexed(client, headers, [thread_id])
            assert (await client.get("/readyz")).json()["checks"]["qdrant"] == "ok"
            stored = qdrant.point_ids(COLLECTION)
            assert len(stored) == len(set(stored))
            assert set(stored) == _message_ids(database_url)
            found = await hits(client, headers, "wine on the carpet", limit=1, role="user")
            assert "red wine" in found[0]["text"]


def _reindex(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(
        TOLLGATE_DATA_DIR=str(settings.data_dir),
        TOLLGATE_DATABASE_URL=settings.resolved_database_url,
    )
    if settings.qdrant_url:
        env["TOLLGATE_QDRANT_URL"] = settings.qdrant_url
    return subprocess.run(
        [sys.executable, "-m", "api", "search", "reindex", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


class TestReindex:
    async def test_reindex_rebuilds_the_index_from_the_database(
        self, settings: Settings, qdrant: FakeQdrant, database_url: str
    ):
        """With Redis: the Qdrant server. Without: the embedded store, whose server must be
        stopped first."""
        server = settings.redis_url is not None
        configured = settings.model_copy(
            update={"search_enabled": True, "qdrant_url": qdrant.url if server else None}
        )
        vectors = configured.data_dir / "vectors"
        async with search_app(configured) as app:
            client = app.client
            tenants = [await create_tenant(client, "alpha"), await create_tenant(client, "beta")]
            for tenant in tenants:
                headers = bearer((await create_key(client, tenant, test=True))["secret"])
                thread_id = await new_thread(client, headers)
                for text in ("Do I need a visa to visit Japan?", "Sleeper trains in Europe"):
                    await send_turn(client, headers, thread_id, text)
                await wait_indexed(client, headers, [thread_id])
            if not server:
                busy = _reindex(configured)
                assert busy.returncode == 1
                assert busy.stderr.strip().splitlines() == [
                    f"error: vector store: The vector store in {vectors} is in use by another "
                    "process."
                ]
        messages = _message_ids(database_url)
        assert len(messages) == 8
        alpha = uuid.UUID(tenants[0].id)

        def store() -> VectorStore:  # what the store holds, seen from outside the app
            return QdrantStore(qdrant.url) if server else EdgeStore(vectors)

        async def count(tenant: uuid.UUID | None = None) -> int:
            opened = store()
            try:
                return await opened.count(tenant)
            finally:
                await opened.close()

        # One tenant's vectors lost: rebuilt for that tenant alone.
        lost = store()
        await lost.delete_where(alpha)
        await lost.close()
        assert await count() == 4
        one = _reindex(configured, "--tenant", str(alpha))
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout) == {"tenant_id": str(alpha), "messages": 4, "vectors": 4}
        assert "Indexing" in one.stderr
        assert await count() == 8
        # Everything lost (another model, say): rebuilt from the database.
        if server:
            qdrant.client.delete_collection(COLLECTION)
        else:
            shutil.rmtree(vectors)
        assert await count() == 0
        everything = _reindex(configured)
        assert everything.returncode == 0, everything.stderr
        assert json.loads(everything.stdout) == {"tenant_id": None, "messages": 8, "vectors": 8}
        if server:
            assert set(qdrant.point_ids(COLLECTION)) == messages
        assert await count(alpha) == 4
        async with search_app(configured) as app:
            headers = tenants[1].headers
            found = await hits(app.client, headers, "visa for a trip to Tokyo", role="user")
            assert "Japan" in found[0]["text"]
