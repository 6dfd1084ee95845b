"""A POST whose answer is lost on the way back, retried by the SDK: through a proxy that
forwards the request to Tollgate, waits for the answer, and cuts the connection instead of
relaying it. Sync and async clients, PostgreSQL + Redis and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import tollgate

from api.app import create_app
from api.settings import Settings
from tests.fakes.server import serve_in_thread
from tests.integration.test_sdk import MODEL, Driver, driver_for

pytestmark = pytest.mark.timeout(60)


@dataclass
class DroppingProxy:
    """Relays loopback TCP to `target_port`; the first `drops` connections get no answer: the
    request reaches Tollgate, and its response is read and thrown away."""

    target_port: int
    drops: int = 1
    port: int = 0
    connections: int = 0
    dropped: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        drop = self.dropped < self.drops
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            try:
                if drop:
                    forward = asyncio.create_task(_pipe(reader, up_writer))
                    if await up_reader.read(65536):  # Tollgate answered: lose the answer
                        self.dropped += 1
                    forward.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await forward
                else:
                    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                await _close(up_writer)
        finally:
            await _close(writer)
            self.handlers.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until end of stream, then passes the end on (so the other side closes too)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


@contextlib.asynccontextmanager
async def dropping_proxy(base_url: str) -> AsyncIterator[DroppingProxy]:
    proxy = DroppingProxy(int(base_url.rsplit(":", 1)[1]))
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for handler in list(proxy.handlers):
            handler.cancel()
        await asyncio.gather(*proxy.handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
def base_url(gateway_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(gateway_settings)) as url:
        yield url


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[Driver]:
    async with driver_for(request.param, base_url) as driver:
        yield driver


@contextlib.asynccontextmanager
async def through_proxy(
    sdk: Driver, base_url: str, api_key: str | None
) -> AsyncIterator[tuple[Driver, DroppingProxy]]:
    """A client of its own (its first connection is the proxy's first), with retries on."""
    async with dropping_proxy(base_url) as proxy:
        client = sdk.client.with_options(api_key=api_key or sdk.client.api_key)
        fresh: tollgate.Tollgate | tollgate.AsyncTollgate = type(client)(
            api_key=client.api_key, base_url=proxy.url, max_retries=2
        )
        try:
            yield Driver(fresh, sdk.tenant_id), proxy
        finally:
            await sdk(fresh.close)


class TestLostAnswers:
    async def test_a_key_is_minted_once(self, sdk: Driver, base_url: str):
        async with through_proxy(sdk, base_url, None) as (proxied, proxy):
            key = await proxied(proxied.client.keys.create, name="alice", max_spend_usd=5)
        assert (proxy.dropped, proxy.connections) == (1, 2)
        names = [k.name for k in await sdk.all(sdk.client.keys.list)]
        assert sorted(names) == ["alice", "master"]
        alice = sdk.as_key(key.secret)  # the replayed answer carries the one secret
        assert (await alice(alice.client.keys.retrieve_self)).id == key.id

    async def test_a_job_is_submitted_once(self, sdk: Driver, base_url: str):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        async with through_proxy(sdk, base_url, key.secret) as (proxied, proxy):
            job = await proxied(
                proxied.client.jobs.submit, endpoint="/v1/chat/completions", body=body
            )
        assert proxy.dropped == 1
        assert [j.id for j in await sdk.all(sdk.client.jobs.list)] == [job.id]

    async def test_a_turn_is_run_once(self, sdk: Driver, base_url: str):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        alice = sdk.as_key(key.secret)
        thread = await alice(alice.client.threads.create)
        async with through_proxy(sdk, base_url, key.secret) as (proxied, proxy):
            reply = await proxied(
                proxied.client.threads.messages.create, thread.id, model=MODEL, content="Hi"
            )
        assert proxy.dropped == 1
        stored = await alice.all(alice.client.threads.messages.list, thread.id)
        assert [(m.role, m.id) for m in stored] == [
            ("user", reply.turn_id),
            ("assistant", reply.id),
        ]

    async def test_a_thread_is_not_created_twice_when_its_answer_is_lost(
        self, sdk: Driver, base_url: str
    ):
        """Tollgate does not deduplicate thread creation, so the SDK does not repeat it: the
        caller hears the connection failed, and finds one thread, not two."""
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        async with through_proxy(sdk, base_url, key.secret) as (proxied, proxy):
            with pytest.raises(tollgate.APIConnectionError):
                await proxied(proxied.client.threads.create)
        assert (proxy.dropped, proxy.connections) == (1, 1)
        assert len(await sdk.all(sdk.client.threads.list)) == 1
