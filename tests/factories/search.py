"""Search test helpers: an app with search on, thread turns through the API, waiting for them
to be indexed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from api.app import create_app
from api.search.runtime import Search
from api.settings import Settings

MODEL = "gpt-4o-mini"  # answered by the mock provider for test keys
INDEX_WAIT_SECONDS = 90.0  # the first index of a test process loads the model (7-20 s)


@dataclass
class SearchApp:
    client: httpx.AsyncClient
    state: dict[str, Any]  # what the lifespan yielded

    @property
    def search(self) -> Search:
        search: Search = self.state["search"]
        return search


@contextlib.asynccontextmanager
async def search_app(settings: Settings) -> AsyncIterator[SearchApp]:
    app = create_app(settings)
    async with LifespanManager(app, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            # https: the dashboard's Secure session cookie is sent (the transport ignores it).
            transport=transport,
            base_url="https://tollgate.test",
            timeout=60,
        ) as client:
            yield SearchApp(client, manager._state)


async def new_thread(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/v1/threads", json={}, headers=headers)
    assert response.status_code == 201, response.text
    thread_id: str = response.json()["id"]
    return thread_id


@dataclass(frozen=True)
class TurnIds:
    user: str  # the user message (its id is the turn's)
    assistant: str


async def send_turn(
    client: httpx.AsyncClient, headers: dict[str, str], thread_id: str, text: str
) -> TurnIds:
    response = await client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"model": MODEL, "content": text, "max_tokens": 200},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return TurnIds(user=body["turn_id"], assistant=body["id"])


async def wait_indexed(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    thread_ids: list[str],
    seconds: float = INDEX_WAIT_SECONDS,
) -> None:
    """Until `GET /v1/threads/{id}` says `indexed: true` for each (fails after `seconds`)."""
    waiting = set(thread_ids)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while waiting:
        for thread_id in sorted(waiting):
            response = await client.get(f"/v1/threads/{thread_id}", headers=headers)
            assert response.status_code == 200, response.text
            if response.json()["indexed"]:
                waiting.discard(thread_id)
        if waiting:
            assert loop.time() < deadline, f"not indexed after {seconds} s: {sorted(waiting)}"
            await asyncio.sleep(0.1)


async def search(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, **fields: Any
) -> httpx.Response:
    return await client.post("/v1/search", json={"query": query, **fields}, headers=headers)


async def hits(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, **fields: Any
) -> list[dict[str, Any]]:
    response = await search(client, headers, query, **fields)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    data: list[dict[str, Any]] = body["data"]
    return data
