"""`client.search` against a live server with search on (the real embedding model): on
PostgreSQL + Redis (a worker embeds, Qdrant's in-memory local mode behind the server code path)
and on the embedded default (SQLite, Qdrant Edge in the data dir). Sync and async clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import tollgate

from api.app import create_app
from api.settings import Settings
from tests.fakes.server import serve_in_thread
from tests.integration.test_sdk import MODEL, Driver, driver_for, eventually

pytestmark = pytest.mark.timeout(240)

TURNS = [
    "How long should I boil an egg to get a runny yolk?",
    "Which wood is best for a cutting board?",
    "Do I need a visa to visit Japan for two weeks?",
]
INDEX_WAIT_SECONDS = 120.0  # the first index of a test process loads the model (7-20 s)


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    update: dict[str, object] = {"search_enabled": True}
    if settings.redis_url:
        update["qdrant_url"] = ":memory:"
    with serve_in_thread(create_app(settings.model_copy(update=update))) as url:
        yield url


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[Driver]:
    async with driver_for(request.param, base_url) as driver:
        yield driver


class TestSearch:
    async def test_a_users_history_by_meaning(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        other = await sdk(sdk.client.keys.create, name="bob", test=True)
        alice, bob = sdk.as_key(key.secret), sdk.as_key(other.secret)
        thread = await alice(alice.client.threads.create)
        turn_ids = []
        for text in TURNS:
            reply = await alice(
                alice.client.threads.messages.create, thread.id, model=MODEL, content=text
            )
            turn_ids.append(reply.turn_id)
        await eventually(
            lambda: _indexed(alice, thread.id), seconds=INDEX_WAIT_SECONDS
        )  # fmt: skip

        found = await alice(alice.client.search.query, "soft boiled egg cooking time", limit=3)
        assert found.data[0].message_id == turn_ids[0]
        assert (found.data[0].thread_id, found.data[0].role) == (thread.id, "user")
        assert found.data[0].score > found.data[-1].score
        users_only = await alice(
            alice.client.search.query, "travel documents for Tokyo", role="user", limit=1
        )
        assert [h.message_id for h in users_only.data] == [turn_ids[2]]
        assert (await bob(bob.client.search.query, "eggs")).data == []  # not bob's history
        as_master = await sdk(sdk.client.search.query, "cutting board", key_id=key.id, limit=1)
        assert as_master.data[0].message_id == turn_ids[1]
        with pytest.raises(tollgate.BadRequestError) as blank:
            await alice(alice.client.search.query, "   ")
        assert blank.value.param == "query"


async def _indexed(user: Driver, thread_id: str) -> bool:
    thread = await user(user.client.threads.retrieve, thread_id)
    return thread.indexed
