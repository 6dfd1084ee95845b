"""Search over thread turns through the API, with the real embedding model: relevance,
isolation between tenants and keys, `indexed`, thread deletion, bad input. Each test runs on
PostgreSQL + Redis (arq tasks, qdrant-client's in-memory local mode behind the server code
path, queries embedded by a worker's round trip) and on the embedded default (SQLite, tasks in
process, Qdrant Edge in the data dir)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_sessionmaker
from api.search.embedder import LocalEmbedder
from api.search.indexer import Indexer
from api.search.store import QdrantStore
from api.settings import Settings
from tests.dashboard import dashboard_client, sign_in
from tests.factories.search import (
    SearchApp,
    hits,
    new_thread,
    search,
    search_app,
    send_turn,
    wait_indexed,
)
from tests.factories.tenants import bearer, create_key, create_tenant

pytestmark = pytest.mark.timeout(240)

# Three conversations of ten turns each; each query paraphrases one turn.
THREADS = [
    [
        "How long should I boil an egg to get a runny yolk?",
        "What's a good substitute for buttermilk in pancakes?",
        "My sourdough starter smells like acetone, is it dead?",
        "How do I keep basil from wilting on the windowsill?",
        "Which wood is best for a cutting board?",
        "Can I freeze cooked rice safely?",
        "How do I remove red wine stains from a carpet?",
        "What temperature should a roast chicken reach inside?",
        "Tips for descaling an electric kettle with vinegar",
        "Why does my cast iron pan rust after washing?",
    ],
    [
        "Do I need a visa to visit Japan for two weeks?",
        "What's the cheapest way to get from the airport to central Lisbon?",
        "How early should I arrive for an international flight?",
        "Is travel insurance worth it for a ski trip?",
        "Best time of year to see the northern lights in Norway",
        "How do I avoid foreign transaction fees on my credit card?",
        "Can I bring a power bank in checked luggage?",
        "What vaccines are recommended before a trip to Kenya?",
        "How do overnight sleeper trains work in Europe?",
        "My checked suitcase was lost by the airline, what should I do?",
    ],
    [
        "How do I undo the last git commit but keep the changes?",
        "Why is my Python list comprehension slower than numpy?",
        "What's the difference between a process and a thread?",
        "How do I set up a PostgreSQL index for a LIKE query with a prefix?",
        "My Docker container exits immediately after starting",
        "How should I store user passwords securely?",
        "Explain what a race condition is with an example",
        "How do I parse JSON in JavaScript safely?",
        "Kubernetes pod stuck in CrashLoopBackOff",
        "How to write a regular expression for an email address",
    ],
]
QUERIES = [  # (query, thread, turn)
    ("soft boiled egg cooking time", 0, 0),
    ("getting wine out of a rug", 0, 6),
    ("storing leftover rice in the freezer", 0, 5),
    ("entry requirements for tourists going to Tokyo", 1, 0),
    ("the airline misplaced my bag", 1, 9),
    ("aurora borealis season in Scandinavia", 1, 4),
    ("revert a commit in version control without losing my work", 2, 0),
    ("hashing passwords for a login system", 2, 5),
    ("container stops right after it launches", 2, 4),
    ("two threads modifying shared data at the same time", 2, 6),
]


@pytest.fixture
def search_settings(settings: Settings) -> Settings:
    """Search on: with Redis, the server code path over qdrant-client's in-memory local mode
    (the API runs its own worker, which shares it); without, the embedded default."""
    update: dict[str, object] = {"search_enabled": True}
    if settings.redis_url:
        update["qdrant_url"] = ":memory:"
    return settings.model_copy(update=update)


@pytest.fixture
async def app(search_settings: Settings):
    async with search_app(search_settings) as running:
        yield running


async def _key(app: SearchApp, tenant, name: str) -> tuple[str, dict[str, str]]:
    key = await create_key(app.client, tenant, name=name, test=True)
    return key["id"], bearer(key["secret"])


class TestRelevance:
    async def test_the_expected_turn_is_in_the_top_three_for_nine_queries_of_ten(
        self, app: SearchApp
    ):
        client = app.client
        tenant = await create_tenant(client)
        _, headers = await _key(app, tenant, "reader")
        turns: list[list[str]] = []
        thread_ids = []
        for texts in THREADS:
            thread_id = await new_thread(client, headers)
            thread_ids.append(thread_id)
            turns.append([(await send_turn(client, headers, thread_id, t)).user for t in texts])
        await wait_indexed(client, headers, thread_ids)
        found = 0
        for query, thread, turn in QUERIES:
            top = await hits(client, headers, query, limit=3, role="user")
            assert [h["role"] for h in top] == ["user"] * 3
            if turns[thread][turn] in [h["message_id"] for h in top]:
                found += 1
        assert found >= 9, f"{found} of {len(QUERIES)} queries found their turn in the top 3"

    async def test_a_hit_carries_the_message_from_the_database(self, app: SearchApp):
        client = app.client
        tenant = await create_tenant(client)
        _, headers = await _key(app, tenant, "reader")
        thread_id = await new_thread(client, headers)
        sent = await send_turn(client, headers, thread_id, THREADS[0][2])
        await wait_indexed(client, headers, [thread_id])
        top = await hits(client, headers, "sourdough starter smells of nail polish", limit=1)
        assert len(top) == 1
        hit = top[0]
        assert hit["message_id"] in (sent.user, sent.assistant)
        assert hit["thread_id"] == thread_id
        assert THREADS[0][2] in hit["text"]
        assert 0 < hit["score"] <= 1
        messages = (await client.get(f"/v1/threads/{thread_id}/messages", headers=headers)).json()
        created = {m["id"]: m["created_at"] for m in messages["data"]}
        assert hit["created_at"] == created[hit["message_id"]]
        assistant = await hits(client, headers, "sourdough", limit=5, role="assistant")
        assert [h["message_id"] for h in assistant] == [sent.assistant]
        assert await hits(client, headers, "sourdough", min_score=0.99) == []


class TestIsolation:
    async def test_no_query_returns_another_tenants_or_another_keys_turn(self, app: SearchApp):
        client = app.client
        alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
        owners = {}  # key id -> (tenant, headers, thread id, its message ids)
        for tenant in (alpha, beta):
            for name in ("one", "two"):
                key_id, headers = await _key(app, tenant, f"{tenant.id}-{name}")
                thread_id = await new_thread(client, headers)
                # Every key says the same things: only the filters keep their turns apart.
                ids = []
                for text in ("The launch code for the rocket is stored in the vault.",
                             "Our quarterly revenue grew by twelve percent."):  # fmt: skip
                    sent = await send_turn(client, headers, thread_id, text)
                    ids += [sent.user, sent.assistant]
                owners[key_id] = (tenant, headers, thread_id, set(ids))
        for _, headers, thread_id, _ in owners.values():
            await wait_indexed(client, headers, [thread_id])
        queries = ("where is the launch code kept", "how much did revenue grow")
        for _, headers, thread_id, mine in owners.values():
            for query in queries:
                found = await hits(client, headers, query, limit=50)
                assert found, query
                assert {h["message_id"] for h in found} <= mine
                assert {h["thread_id"] for h in found} == {thread_id}
        for tenant in (alpha, beta):
            theirs = set().union(*(o[3] for o in owners.values() if o[0] is tenant))
            for query in queries:
                found = await hits(client, tenant.headers, query, limit=50)
                assert {h["message_id"] for h in found} == theirs  # both keys', all of them
        # Filters naming what the caller cannot see are 404s, never another's hits.
        (a1, a2), (b1, _) = [
            [k for k, o in owners.items() if o[0] is t] for t in (alpha, beta)
        ]  # fmt: skip
        a1_headers, a2_thread = owners[a1][1], owners[a2][2]
        for headers, fields in (
            (a1_headers, {"key_id": b1}),  # another tenant's key
            (a1_headers, {"key_id": a2}),  # a sibling key of the same tenant
            (a1_headers, {"thread_id": owners[b1][2]}),  # another tenant's thread
            (a1_headers, {"thread_id": a2_thread}),  # a sibling key's thread
            (alpha.headers, {"key_id": b1}),  # the master key, another tenant's key
            (alpha.headers, {"thread_id": owners[b1][2]}),
        ):
            response = await search(client, headers, queries[0], **fields)
            assert response.status_code == 404, (fields, response.text)
            assert response.json()["error"]["code"] == "not_found"
        # The master key may narrow to one of its keys, or to one of their threads.
        narrowed = await hits(client, alpha.headers, queries[0], key_id=a2, limit=50)
        assert narrowed
        assert {h["message_id"] for h in narrowed} <= owners[a2][3]
        by_thread = await hits(client, alpha.headers, queries[0], thread_id=a2_thread, limit=50)
        assert by_thread
        assert {h["thread_id"] for h in by_thread} == {a2_thread}
        own = await hits(client, a1_headers, queries[0], key_id=a1, limit=50)
        assert own
        assert {h["message_id"] for h in own} <= owners[a1][3]


class TestConsistency:
    async def test_indexed_flips_to_true_and_counts_every_message_once(self, app: SearchApp):
        client = app.client
        tenant = await create_tenant(client)
        _, headers = await _key(app, tenant, "writer")
        thread_id = await new_thread(client, headers)
        created = (await client.get(f"/v1/threads/{thread_id}", headers=headers)).json()
        assert created["indexed"] is True  # nothing to index yet
        for text in THREADS[1][:3]:
            await send_turn(client, headers, thread_id, text)
        await wait_indexed(client, headers, [thread_id])
        listed = (await client.get("/v1/threads", headers=headers)).json()["data"]
        assert [t["indexed"] for t in listed] == [True]
        store = app.search.store
        assert store is not None
        assert await store.count() == 6  # three user and three assistant messages
        # Indexing everything again (the sweep) adds nothing: a point per message.
        assert app.search.indexer is not None
        assert await app.search.indexer.index_pending() == 0
        assert await store.count() == 6

    async def test_deleting_a_thread_deletes_its_vectors(self, app: SearchApp):
        client = app.client
        tenant = await create_tenant(client)
        _, headers = await _key(app, tenant, "writer")
        kept, dropped = await new_thread(client, headers), await new_thread(client, headers)
        await send_turn(client, headers, kept, THREADS[2][0])
        await send_turn(client, headers, dropped, THREADS[2][1])
        await send_turn(client, headers, dropped, THREADS[2][2])
        await wait_indexed(client, headers, [kept, dropped])
        store = app.search.store
        assert store is not None
        assert await store.count() == 6
        deleted = await client.delete(f"/v1/threads/{dropped}", headers=headers)
        assert deleted.status_code == 200
        # Search never shows the deleted thread, even before its vectors are gone.
        found = await hits(client, headers, "numpy list comprehension speed", limit=50)
        assert {h["thread_id"] for h in found} == {kept}
        for _ in range(600):
            if await store.count() == 2:
                break
            await asyncio.sleep(0.05)
        assert await store.count() == 2
        assert await store.count(uuid.UUID(tenant.id)) == 2


class TestBadInput:
    async def test_bad_bodies_are_400_with_the_field(self, app: SearchApp):
        client = app.client
        tenant = await create_tenant(client)
        cases = [
            ({"query": ""}, "query"),
            ({"query": "   "}, "query"),
            ({"query": "x" * 5000}, "query"),
            ({"query": "x", "limit": 0}, "limit"),
            ({"query": "x", "limit": 51}, "limit"),
            ({"query": "x", "limit": "ten"}, "limit"),
            ({"query": "x", "thread_id": "not-a-uuid"}, "thread_id"),
            ({"query": "x", "key_id": "123"}, "key_id"),
            ({"query": "x", "role": "system"}, "role"),
            ({"query": "x", "min_score": 2}, "min_score"),
            ({"query": "x", "start": "yesterday"}, "start"),
            ({"query": "x", "start": "2026-01-01T00:00:00"}, "start"),  # no timezone
            (
                {"query": "x", "start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                "start",
            ),
            ({"query": "x", "filter": {}}, "filter"),
            ({}, "query"),
        ]
        for body, param in cases:
            response = await client.post("/v1/search", json=body, headers=tenant.headers)
            assert response.status_code == 400, (body, response.text)
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error", body
            assert error["param"] == param, (body, error)
            assert response.headers["x-should-retry"] == "false"
        json_headers = {**tenant.headers, "content-type": "application/json"}
        not_json = await client.post("/v1/search", content=b"{", headers=json_headers)
        assert not_json.status_code == 400
        anonymous = await client.post("/v1/search", json={"query": "x"})
        assert anonymous.status_code == 401

    async def test_start_and_end_bound_created_at(self, app: SearchApp):
        client = app.client
        tenant = await create_tenant(client)
        _, headers = await _key(app, tenant, "writer")
        thread_id = await new_thread(client, headers)
        await send_turn(client, headers, thread_id, THREADS[0][4])
        await wait_indexed(client, headers, [thread_id])
        messages = (await client.get(f"/v1/threads/{thread_id}/messages", headers=headers)).json()
        at = messages["data"][0]["created_at"]
        query = "what wood for a chopping board"
        assert len(await hits(client, headers, query, start=at, end=at)) == 2
        assert await hits(client, headers, query, end="2020-01-01T00:00:00Z") == []
        assert await hits(client, headers, query, start="2999-01-01T00:00:00Z") == []


class TestEmbeddedStoreBesideRedis:
    async def test_the_api_indexes_its_own_store_even_when_workers_run_the_rest(
        self, settings: Settings, redis_url: str
    ):
        """Redis set, no Qdrant URL: the store in the data dir is this process's, so its tasks
        run here although the API leaves background jobs to `tollgate worker`."""
        configured = settings.model_copy(update={
            "search_enabled": True, "redis_url": redis_url, "qdrant_url": None,
            "api_runs_background_jobs": False,
        })  # fmt: skip
        async with search_app(configured) as app:
            client = app.client
            tenant = await create_tenant(client)
            _, headers = await _key(app, tenant, "writer")
            thread_id = await new_thread(client, headers)
            await send_turn(client, headers, thread_id, THREADS[1][6])
            await wait_indexed(client, headers, [thread_id])
            found = await hits(client, headers, "lithium battery in the hold", role="user")
            assert "power bank" in found[0]["text"]
        assert (configured.data_dir / "vectors").is_dir()


class CountingEmbedder:
    """The real model, counting what it is asked to embed."""

    def __init__(self) -> None:
        self.inner = LocalEmbedder(None)
        self.texts: list[str] = []

    async def embed(self, texts):
        self.texts += list(texts)
        return await self.inner.embed(texts)

    async def dimensions(self) -> int:
        return await self.inner.dimensions()

    async def embed_query(self, text: str) -> list[float]:
        return await self.inner.embed_query(text)


class TestWorkersShareTheBacklog:
    async def test_two_indexers_never_take_the_same_message(
        self, settings: Settings, engine: AsyncEngine
    ):
        """Two workers' indexers on one backlog: on PostgreSQL each claims rows the other has
        not locked (`FOR UPDATE SKIP LOCKED`), so none is embedded twice. SQLite has no row
        locks (the embedded default runs one indexer, one batch at a time); two there may both
        embed a message, and it still ends as one point."""
        async with search_app(settings) as app:  # search off: the turns wait unindexed
            client = app.client
            tenant = await create_tenant(client)
            _, headers = await _key(app, tenant, "writer")
            thread_id = await new_thread(client, headers)
            for text in THREADS[0] + THREADS[1]:
                await send_turn(client, headers, thread_id, text)
        store = QdrantStore(":memory:")
        sessionmaker = create_sessionmaker(engine)
        embedders = [CountingEmbedder(), CountingEmbedder()]
        indexers = [Indexer(sessionmaker, store, e, batch_size=4) for e in embedders]
        done = await asyncio.gather(*(i.index_pending() for i in indexers))
        if settings.redis_url:  # PostgreSQL
            assert sum(done) == 40
            assert len(embedders[0].texts + embedders[1].texts) == 40
            assert all(embedder.texts for embedder in embedders)  # both took a share
        assert await store.count() == 40
        assert await indexers[0].index_pending() == 0
        await store.close()


class TestDashboardSearch:
    async def test_the_search_page_finds_the_tenants_own_turns_only(self, app: SearchApp):
        client = app.client
        alpha, beta = await create_tenant(client, "alpha"), await create_tenant(client, "beta")
        sent = {}
        for tenant, text in (
            (alpha, "Alpha's sourdough starter smells of nail polish"),
            (beta, "Beta's sourdough starter smells of nail polish too"),
        ):
            _, headers = await _key(app, tenant, "reader")
            thread_id = await new_thread(client, headers)
            sent[tenant.id] = (thread_id, await send_turn(client, headers, thread_id, text))
            await wait_indexed(client, headers, [thread_id])
        await sign_in(client, alpha.master_key)
        page = await client.get("/dashboard/search", params={"q": "sourdough", "role": "user"})
        assert page.status_code == 200
        assert "Alpha&#39;s sourdough starter" in page.text
        assert f'href="/dashboard/threads/{sent[alpha.id][0]}"' in page.text
        assert "Beta" not in page.text
        assert sent[beta.id][0] not in page.text
        bad = await client.get("/dashboard/search", params={"q": "x", "role": "admin"})
        assert bad.status_code == 400
        assert bad.headers["content-type"].startswith("text/html")

    async def test_with_search_off_the_page_says_so(self, settings: Settings):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            page = await client.get("/dashboard/search")
            assert "Search is turned off on this server" in page.text
            asked = await client.get("/dashboard/search", params={"q": "anything"})
            assert asked.status_code == 400
            assert "Search is turned off on this server" in asked.text
