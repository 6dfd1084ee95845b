"""The lean HTTP/1.1 client (`api/kit/http1.py`) against real sockets on loopback.

aiohttp's server stands in for a well-behaved upstream; a raw `asyncio.start_server` server
plays the misbehaving ones (answers broken off, stalls, garbage, closed keep-alive connections).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gzip
import ipaddress
import random
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvloop
from aiohttp import web
from multidict import CIMultiDict
from pydantic import SecretStr

from api.app import create_app
from api.gateway.providers.registry import upstream_proxies
from api.kit.http1 import HTTPClient, HTTPClientError, Timeouts
from api.kit.proxies import Proxies
from api.settings import ConfigurationError, Settings
from tests.fakes.proxy import fake_proxy
from tools.testenv import free_port

JSON = {"Content-Type": "application/json"}


# A raw server, for answers no well-behaved server would give.


@dataclass
class Seen:
    """A request as the server read it off the wire."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


class Conn:
    """One accepted connection, as the raw server's handler sees it."""

    def __init__(self, server: RawServer, index: int, reader, writer) -> None:
        self.server = server
        self.index = index  # 0 for the first connection the server accepted
        self.reader: asyncio.StreamReader = reader
        self.writer: asyncio.StreamWriter = writer
        self.gone = asyncio.Event()  # the client closed its end
        self.ended = asyncio.Event()  # the server's handler is done and its end closed

    async def request(self) -> Seen | None:
        """The next request on this connection, None once the client has closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.gone.set()
            return None
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ")
        assert version == "HTTP/1.1"
        headers = [(name, value) for name, value in (item.split(": ", 1) for item in lines if item)]
        length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
        body = await self.reader.readexactly(length)
        seen = Seen(method, target, headers, body)
        self.server.requests.append(seen)
        return seen

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_gone(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.gone.set()


Handler = Callable[[Conn], Awaitable[None]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    connections: int = 0  # accepted so far
    open: int = 0
    most_open: int = 0  # the most connections open at once
    requests: list[Seen] = field(default_factory=list)
    conns: list[Conn] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = Conn(self, self.connections, reader, writer)
        self.conns.append(conn)
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.gone.set()
        finally:
            self.open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            conn.ended.set()
            self.tasks.discard(task)


@contextlib.asynccontextmanager
async def raw_server(
    handler: Handler, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RawServer]:
    state = RawServer(handler)
    server = await asyncio.start_server(state._serve, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await server.wait_closed()


def answer(body: bytes = b"ok", *, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


async def keepalive_ok(conn: Conn) -> None:
    """A well-behaved keep-alive server: answers each request with its own body."""
    while (seen := await conn.request()) is not None:
        await conn.send(answer(b"echo:" + seen.body))


@contextlib.asynccontextmanager
async def client_for(**kwargs) -> AsyncIterator[HTTPClient]:
    client = HTTPClient(**kwargs)
    try:
        yield client
    finally:
        await client.close()


async def fetch(client: HTTPClient, url: str, body: bytes = b"{}", **kwargs) -> tuple[int, bytes]:
    response = await client.request("POST", url, headers=JSON, body=body, **kwargs)
    try:
        return response.status, await response.read()
    finally:
        response.release()


# An aiohttp server, for well-behaved upstreams.


@dataclass
class AioServer:
    url: str
    peers: list[tuple[str, int]] = field(default_factory=list)  # one entry per request


@contextlib.asynccontextmanager
async def aio_server(routes: Callable[[web.Application, AioServer], None]):
    app = web.Application()
    state = AioServer(url="")
    routes(app, state)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def _peer(request: web.Request, state: AioServer) -> None:
    assert request.transport is not None
    state.peers.append(request.transport.get_extra_info("peername"))


# A well-behaved server.


async def test_a_post_and_its_answer_as_both_sides_see_them():
    seen: dict[str, object] = {}

    async def handle(request: web.Request) -> web.Response:
        seen["method"] = request.method
        seen["path"] = request.path_qs
        seen["headers"] = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        seen["body"] = await request.read()
        headers = CIMultiDict([("X-Repeated", "one"), ("X-Repeated", "two"), ("X-Mixed", "Yes")])
        return web.Response(status=201, body=b'{"id": "x"}', headers=headers)

    def routes(app: web.Application, state: AioServer) -> None:
        app.router.add_post("/v1/chat", handle)

    body = b'{"model": "m", "n": 1}'
    async with aio_server(routes) as server, client_for() as client:
        response = await client.request(
            "POST",
            server.url + "/v1/chat?a=1&b=two",
            headers={"Authorization": "Bearer k", "X-Custom": "v", **JSON},
            body=body,
        )
        assert response.status == 201
        assert response.headers["x-repeated"] == "one, two"
        assert response.headers["x-mixed"] == "Yes"
        assert response.headers["content-length"] == "11"
        assert all(name == name.lower() for name in response.headers)
        assert await response.read() == b'{"id": "x"}'
        response.release()

    assert seen["method"] == "POST"
    assert seen["path"] == "/v1/chat?a=1&b=two"
    assert seen["body"] == body
    headers = seen["headers"]
    assert isinstance(headers, list)
    port = server.url.rsplit(":", 1)[1]
    assert ("Host", f"127.0.0.1:{port}") in headers
    assert ("Content-Length", str(len(body))) in headers
    assert ("Authorization", "Bearer k") in headers
    assert ("X-Custom", "v") in headers
    assert ("Content-Type", "application/json") in headers
    assert ("Accept-Encoding", "identity") in headers
    assert [name for name, _ in headers].count("Host") == 1


async def test_a_large_request_body_arrives_whole():
    body = random.Random(7).randbytes(300_000)  # above the size sent as one buffer with the head
    async with raw_server(keepalive_ok) as server, client_for() as client:
        assert await fetch(client, server.url + "/big", body) == (200, b"echo:" + body)
        assert await fetch(client, server.url + "/small", b"x") == (200, b"echo:x")
    assert server.requests[0].header("Content-Length") == "300000"
    assert server.requests[0].body == body
    assert server.connections == 1


async def test_an_empty_body_is_sent_with_a_zero_length():
    async with raw_server(keepalive_ok) as server, client_for() as client:
        assert await fetch(client, server.url, b"") == (200, b"echo:")
    assert server.requests[0].header("Content-Length") == "0"
    assert server.requests[0].target == "/"


async def test_sequential_requests_share_one_connection():
    async def handle(request: web.Request) -> web.Response:
        _peer(request, state)
        return web.Response(body=await request.read())

    def routes(app: web.Application, server: AioServer) -> None:
        app.router.add_post("/echo", handle)

    state: AioServer
    async with aio_server(routes) as state, client_for() as client:
        for i in range(3):
            assert await fetch(client, state.url + "/echo", b"%d" % i) == (200, b"%d" % i)
    assert len(state.peers) == 3
    assert len(set(state.peers)) == 1  # one TCP connection (one client port) for all three


async def test_releasing_before_the_end_of_the_body_closes_the_connection():
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(answer(b"x" * 1000)[:-990])  # the head and 10 bytes of 1000
            await conn.until_gone()
        else:
            await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert response.status == 200
        response.release()  # the body is not in: the connection cannot be reused
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
    assert server.connections == 2


@pytest.mark.parametrize("let_go", ["release", "release_when_done"])
async def test_a_released_whole_answer_keeps_the_connection(let_go: str):
    async with raw_server(keepalive_ok) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert await response.read() == b"echo:1"
        getattr(response, let_go)()
        getattr(response, let_go)()  # twice is harmless
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
        assert server.conns[0].gone.is_set() is False
    assert server.connections == 1


def _chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_released_when_done_the_closing_chunk_that_comes_later_keeps_the_connection():
    """A stream's reader stops at its last event; the body's closing chunk is still on the
    way. Once it arrives, the connection serves the next request."""
    last_event_read = asyncio.Event()

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(_chunked_head() + b"5\r\nfirst\r\n")
        await last_event_read.wait()
        await asyncio.sleep(0.05)  # the reader has let go by now
        await conn.send(b"0\r\n\r\n")
        await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert await anext(response.chunks()) == b"first"
        response.release_when_done()
        last_event_read.set()
        assert client._open == 1
        await asyncio.sleep(0.15)
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
        assert not server.conns[0].gone.is_set()
    assert server.connections == 1


async def test_released_when_done_more_than_a_tail_closes_the_connection():
    """What comes after the reader let go is not a closing chunk: a body that goes on (the
    reader stopped early) is dropped, not drained."""

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(_chunked_head() + b"5\r\nfirst\r\n")
            await asyncio.sleep(0.05)
            piece = b"x" * 4096
            for _ in range(8):  # 32 KB more
                await conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            await conn.until_gone()
        else:
            await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert await anext(response.chunks()) == b"first"
        response.release_when_done()
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        assert client._open == 0
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
    assert server.connections == 2


async def test_released_when_done_a_body_that_never_ends_is_closed(monkeypatch):
    monkeypatch.setattr("api.kit.http1._TAIL_SECONDS", 0.1)

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(_chunked_head() + b"5\r\nfirst\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert await anext(response.chunks()) == b"first"
        response.release_when_done()
        assert client._open == 1  # waiting for the end
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        assert client._open == 0


async def test_released_when_done_a_connection_lost_meanwhile_is_forgotten():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(_chunked_head() + b"5\r\nfirst\r\n")
        await asyncio.sleep(0.05)  # then the handler ends: the server closes the connection

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert await anext(response.chunks()) == b"first"
        response.release_when_done()
        await asyncio.wait_for(server.conns[0].ended.wait(), 1)
        await asyncio.sleep(0.05)
        assert client._open == 0


async def test_bytes_after_the_end_of_an_answer_retire_the_connection():
    """A server that sends more than the answer (another one, unasked) cannot be trusted with
    the next request: its framing is off. The answer asked for is read as it was."""

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(answer(b"one") + answer(b"unasked"))
            await conn.until_gone()
        else:
            await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url, b"1") == (200, b"one")
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
    assert server.connections == 2


async def test_idle_connections_expire():
    async with raw_server(keepalive_ok) as server, client_for(keepalive_seconds=0.05) as client:
        assert await fetch(client, server.url, b"1") == (200, b"echo:1")
        await asyncio.sleep(0.1)
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)  # the expired one was closed
    assert server.connections == 2


# Bodies: chunked, until close, none, compressed.


async def test_a_chunked_answer():
    async def handle(request: web.Request) -> web.StreamResponse:
        _peer(request, state)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"alpha ", b"beta ", b"gamma"):
            await response.write(piece)
        await response.write_eof()
        return response

    def routes(app: web.Application, server: AioServer) -> None:
        app.router.add_post("/stream", handle)

    state: AioServer
    async with aio_server(routes) as state, client_for() as client:
        response = await client.request("POST", state.url + "/stream", headers=JSON)
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        assert await response.read() == b"alpha beta gamma"
        response.release()
        assert await fetch(client, state.url + "/stream") == (200, b"alpha beta gamma")
    assert len(set(state.peers)) == 1  # a chunked answer ends cleanly: the connection is reused


async def test_a_chunked_answers_trailers_do_not_leak_into_the_next_answer():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
        )
        assert await conn.request() is not None
        await conn.send(answer(b"second"))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url) == (200, b"hello")
        response = await client.request("POST", server.url, headers=JSON)
        assert await response.read() == b"second"
        assert "x-checksum" not in response.headers
        assert set(response.headers) == {"content-length"}
        response.release()
    assert server.connections == 1


async def test_a_body_that_ends_when_the_connection_closes():
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            await conn.send(b"first part, ")
            await asyncio.sleep(0.02)
            await conn.send(b"second part")
        else:
            await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url) == (200, b"first part, second part")
        assert await fetch(client, server.url, b"next") == (200, b"echo:next")
    assert server.connections == 2


async def test_a_204_has_no_body_and_keeps_the_connection():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 204 No Content\r\nX-Note: empty\r\n\r\n")
        await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert response.status == 204
        assert response.headers == {"x-note": "empty"}
        assert await asyncio.wait_for(response.read(), 1) == b""
        response.release()
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
    assert server.connections == 1


PAYLOAD = b'{"choices": [{"text": "' + b"compressible " * 2000 + b'"}]}'


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZIP", gzip.compress)],
)
async def test_compressed_answers_are_decoded(encoding, compress):
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(answer(compress(PAYLOAD), headers=f"Content-Encoding: {encoding}\r\n"))

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url) == (200, PAYLOAD)
        assert await fetch(client, server.url) == (200, PAYLOAD)  # and the connection is reused
    assert server.connections == 1


async def test_a_chunked_gzip_answer_streams_decoded():
    compressor = zlib.compressobj(wbits=31)  # gzip framing
    first = compressor.compress(b"hello, ") + compressor.flush(zlib.Z_SYNC_FLUSH)
    rest = compressor.compress(b"world") + compressor.flush()
    arrived = asyncio.Event()

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(first), first)
        )
        await asyncio.wait_for(arrived.wait(), 1)
        await conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON)
        pieces = response.chunks()
        assert await asyncio.wait_for(anext(pieces), 1) == b"hello, "
        arrived.set()
        assert [piece async for piece in pieces] == [b"world"]
        response.release()


async def test_an_unsupported_or_corrupt_encoding_is_an_error():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        if conn.index == 0:
            await conn.send(answer(b"x", headers="Content-Encoding: br\r\n"))
        else:
            await conn.send(answer(b"not gzip at all", headers="Content-Encoding: gzip\r\n"))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="br"):
            await client.request("POST", server.url, headers=JSON)
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError):
            await response.read()
        response.release()
        await asyncio.wait_for(server.conns[1].gone.wait(), 1)
    assert server.connections == 2


# Streaming.


async def test_pieces_arrive_as_they_are_sent():
    got_first = asyncio.Event()

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await asyncio.wait_for(got_first.wait(), 1)  # the second waits for the first to be read
        await conn.send(b"6\r\nsecond\r\n")
        await asyncio.sleep(0.02)
        await conn.send(b"0\r\n\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, timeouts=Timeouts(read=1))
        pieces = response.chunks()
        assert await asyncio.wait_for(anext(pieces), 1) == b"first"
        got_first.set()
        assert await asyncio.wait_for(anext(pieces), 1) == b"second"
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(pieces), 1)
        response.release()


async def test_a_large_fast_body_and_a_slow_reader():
    total = 24 * 1024 * 1024
    payload = random.Random(3).randbytes(total)
    sent = 0
    server_done = asyncio.Event()

    async def handler(conn: Conn) -> None:
        nonlocal sent
        assert await conn.request() is not None
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        view = memoryview(payload)
        for start in range(0, total, 64 * 1024):
            conn.writer.write(view[start : start + 64 * 1024])
            await conn.writer.drain()
            sent = start + 64 * 1024
        server_done.set()
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request(
            "POST", server.url, headers=JSON, timeouts=Timeouts(read=1, total=5)
        )
        pieces = response.chunks()
        received = [await anext(pieces)]
        await asyncio.sleep(0.2)  # a slow reader: the server must not get far ahead of it
        assert not server_done.is_set()
        assert sent < total // 2, f"the server sent {sent} bytes to a reader that read none"
        count = 0
        async for piece in pieces:
            received.append(piece)
            count += 1
            if count % 25 == 0:
                await asyncio.sleep(0.005)  # and still slow now and then
        response.release()
    assert server_done.is_set()
    assert len(received) > 2
    assert b"".join(received) == payload  # complete and in order


# Failures.


async def test_nothing_listening_is_a_client_error():
    async with client_for() as client:
        with pytest.raises(HTTPClientError, match="connect"):
            await client.request("POST", f"http://127.0.0.1:{free_port()}/", headers=JSON)


async def test_not_an_http_url_is_a_client_error():
    async with client_for() as client:
        with pytest.raises(HTTPClientError):
            await client.request("POST", "ftp://127.0.0.1/", headers=JSON)
        with pytest.raises(HTTPClientError):
            await client.request("POST", "http:///nohost", headers=JSON)


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_a_body_broken_off_is_a_client_error(framing):
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        if framing == "length":
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        else:
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789")
            await conn.send(b"\r\n")
        await asyncio.sleep(0.05)
        # and the server goes away in the middle of the body

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError, match="closed"):
            await asyncio.wait_for(response.read(), 1)
        response.release()

        response = await client.request("POST", server.url, headers=JSON)
        pieces: list[bytes] = []

        async def relay() -> None:
            async for piece in response.chunks():
                pieces.append(piece)

        with pytest.raises(HTTPClientError):
            await asyncio.wait_for(relay(), 1)
        assert b"".join(pieces) == b"0123456789"  # what did arrive is relayed first
        response.close()
    assert server.connections == 2


async def test_garbage_instead_of_http_is_a_client_error():
    async def handler(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await conn.send(b"SSH-2.0-OpenSSH_9.6\r\nnot an http answer\r\n\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="not valid HTTP"):
            await client.request("POST", server.url, headers=JSON)
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)  # and the connection is dropped


async def test_headers_then_silence_is_a_read_timeout():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request(
            "POST", server.url, headers=JSON, timeouts=Timeouts(read=0.2)
        )
        assert response.status == 200
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await response.read()
        assert 0.15 < time.monotonic() - started < 0.6
        response.release()
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)  # not reused: closed


async def test_the_read_timeout_counts_from_the_last_byte_of_a_trickle():
    """Pieces 0.1 s apart never trip a 0.25 s read timeout, however long they go on; the
    silence after the last one does, a read timeout after it."""

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(_chunked_head())
        for _ in range(8):
            await asyncio.sleep(0.1)
            await conn.send(b"1\r\nx\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request(
            "POST", server.url, headers=JSON, timeouts=Timeouts(read=0.25)
        )
        arrivals: list[float] = []

        async def consume() -> None:
            async for piece in response.chunks():
                arrivals.extend(time.monotonic() for _ in piece)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(consume(), 3)  # a timer that never fires would hang here
        assert len(arrivals) == 8
        assert 0.2 < time.monotonic() - arrivals[-1] < 0.6
        response.close()


async def test_no_head_within_the_read_timeout_is_a_timeout():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.request("POST", server.url, headers=JSON, timeouts=Timeouts(read=0.2))
        assert 0.15 < time.monotonic() - started < 0.6
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
    assert len(server.requests) == 1  # a timeout is not retried


async def test_a_trickle_runs_into_the_total_timeout():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(40):  # a byte every 20 ms: never a read timeout, but 0.8 s in all
            await conn.send(b".")
            await asyncio.sleep(0.02)
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        started = time.monotonic()
        response = await client.request(
            "POST", server.url, headers=JSON, timeouts=Timeouts(read=0.2, total=0.3)
        )
        with pytest.raises(TimeoutError):
            await response.read()
        assert 0.25 < time.monotonic() - started < 0.7
        response.close()


async def test_the_total_timeout_also_bounds_the_wait_for_the_head():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.request(
                "POST", server.url, headers=JSON, timeouts=Timeouts(read=5, total=0.2)
            )
        assert 0.15 < time.monotonic() - started < 0.6


async def test_a_connect_that_hangs_is_a_connect_timeout():
    # A listener that never accepts, with its queue full: Linux drops further SYNs, so a new
    # connection neither succeeds nor fails until the SYN is retried a second later.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        probe = socket.socket()
        probe.setblocking(False)
        fillers.append(probe)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(probe, listener.getsockname()), 0.1
            )
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections past a full listen queue")

        async with client_for() as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await client.request(
                    "POST",
                    f"http://127.0.0.1:{port}/",
                    headers=JSON,
                    timeouts=Timeouts(connect=0.2, read=5),
                )
            assert 0.15 < time.monotonic() - started < 0.6
            assert client._open == 0  # the slot of the connection that never came is free
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


# Keep-alive connections the server closed.


async def test_a_pooled_connection_the_server_closed_is_replaced():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(answer(b"once"))  # keep-alive by default, yet the server hangs up

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url) == (200, b"once")
        await asyncio.wait_for(server.conns[0].ended.wait(), 1)
        await asyncio.sleep(0.02)  # the client sees the close while the connection is idle
        assert await fetch(client, server.url) == (200, b"once")
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_a_request_on_a_stale_connection_goes_once_more_on_a_new_one():
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            seen = await conn.request()
            assert seen is not None
            await conn.send(answer(b"echo:" + seen.body))
            assert await conn.request() is not None  # the second request ...
            return  # ... and the connection closes without a byte of answer
        await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url, b"1") == (200, b"echo:1")
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
        assert await fetch(client, server.url, b"3") == (200, b"echo:3")
    assert server.connections == 2
    assert [seen.body for seen in server.requests] == [b"1", b"2", b"2", b"3"]


async def test_a_fresh_connection_closed_before_any_answer_is_not_retried():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None  # and hang up without answering

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="closed"):
            await client.request("POST", server.url, headers=JSON, body=b"1")
        await asyncio.sleep(0.05)
    assert server.connections == 1
    assert len(server.requests) == 1


async def test_a_reused_connection_that_broke_mid_answer_is_not_retried():
    async def handler(conn: Conn) -> None:
        seen = await conn.request()
        assert seen is not None
        await conn.send(answer(b"echo:" + seen.body))
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 O")  # a byte of the answer, then gone

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url, b"1") == (200, b"echo:1")
        with pytest.raises(HTTPClientError):
            await client.request("POST", server.url, headers=JSON, body=b"2")
    assert len(server.requests) == 2  # the answer had begun: no second try


# Closing, limits, cancellation.


async def test_closing_a_streaming_response_drops_the_connection():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON)
        pieces = response.chunks()
        assert await asyncio.wait_for(anext(pieces), 1) == b"first"
        response.close()
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        with pytest.raises(HTTPClientError):
            await asyncio.wait_for(anext(pieces), 1)  # reading on after close is an error
        assert client._open == 0


async def test_closing_a_response_wakes_a_reader_waiting_on_it():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON)
        reader = asyncio.ensure_future(response.read())  # no read timeout: it waits for bytes
        await asyncio.sleep(0.05)
        assert not reader.done()
        response.close()  # e.g. the gateway's client went away
        with pytest.raises(HTTPClientError):
            await asyncio.wait_for(reader, 1)
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)


async def test_one_connection_at_most_serves_concurrent_requests_in_turn():
    async def handler(conn: Conn) -> None:
        while (seen := await conn.request()) is not None:
            await asyncio.sleep(0.05)
            await conn.send(answer(b"echo:" + seen.body))

    async with raw_server(handler) as server, client_for(max_connections=1) as client:
        results = await asyncio.wait_for(
            asyncio.gather(*(fetch(client, server.url, b"%d" % i) for i in range(3))), 2
        )
        assert results == [(200, b"echo:%d" % i) for i in range(3)]
    assert server.most_open == 1
    assert server.connections == 1
    assert len(server.requests) == 3


async def test_at_the_limit_an_idle_connection_to_another_origin_makes_room():
    async with (
        raw_server(keepalive_ok) as first,
        raw_server(keepalive_ok) as second,
        client_for(max_connections=1) as client,
    ):
        assert await fetch(client, first.url, b"a") == (200, b"echo:a")
        assert await asyncio.wait_for(fetch(client, second.url, b"b"), 1) == (200, b"echo:b")
        await asyncio.wait_for(first.conns[0].gone.wait(), 1)  # the idle one was closed
        assert client._open == 1


async def test_a_waiter_woken_then_cancelled_passes_its_turn_on():
    async with raw_server(keepalive_ok) as server, client_for(max_connections=1) as client:
        holder = await client.request("POST", server.url, headers=JSON, body=b"a")
        assert await holder.read() == b"echo:a"
        second = asyncio.ensure_future(fetch(client, server.url, b"b"))
        third = asyncio.ensure_future(fetch(client, server.url, b"c"))
        await asyncio.sleep(0.02)
        assert not second.done()  # both wait for the one connection
        assert not third.done()
        holder.release()  # the connection goes idle and wakes the second ...
        second.cancel()  # ... which is cancelled before it runs
        assert await asyncio.wait_for(third, 1) == (200, b"echo:c")
        with pytest.raises(asyncio.CancelledError):
            await second
    assert server.connections == 1


async def test_a_line_break_in_a_header_is_refused_before_sending():
    async with raw_server(keepalive_ok) as server, client_for() as client:
        for headers in (
            {"X-Injected": "v\r\nX-Evil: 1"},
            {"X-Injected": "v\nX-Evil: 1"},
            {"X-Evil: 1\r\nX-Injected": "v"},
        ):
            with pytest.raises(ValueError, match="line break"):
                await client.request("POST", server.url, headers=headers, body=b"x")
        await asyncio.sleep(0.02)
        assert server.connections == 0
        assert await fetch(client, server.url, b"ok") == (200, b"echo:ok")
    assert len(server.requests) == 1


async def test_cancelling_a_request_waiting_for_its_head_closes_its_connection():
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.until_gone()  # never answers
        else:
            await keepalive_ok(conn)

    async with raw_server(handler) as server, client_for(max_connections=1) as client:
        task = asyncio.ensure_future(client.request("POST", server.url, headers=JSON))
        for _ in range(100):
            if server.requests:
                break
            await asyncio.sleep(0.01)
        assert len(server.requests) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        # The one allowed connection is free again, and a new one works.
        assert await asyncio.wait_for(fetch(client, server.url, b"after"), 1) == (
            200,
            b"echo:after",
        )
        assert await fetch(client, server.url, b"again") == (200, b"echo:again")
    assert server.connections == 2


async def test_a_closed_client_refuses_requests_and_closes_its_connections():
    async with raw_server(keepalive_ok) as server:
        client = HTTPClient()
        assert await fetch(client, server.url, b"1") == (200, b"echo:1")
        await client.close()
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)  # the idle one is closed
        with pytest.raises(HTTPClientError, match="closed"):
            await client.request("POST", server.url, headers=JSON)
    assert server.connections == 1


async def test_closing_the_client_breaks_an_answer_in_flight():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await conn.until_gone()

    async with raw_server(handler) as server:
        client = HTTPClient()
        response = await client.request("POST", server.url, headers=JSON)
        await client.close()
        with pytest.raises(HTTPClientError):
            await asyncio.wait_for(response.read(), 1)
        response.release()
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)


# TLS, against a self-signed certificate made here.


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate-test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_trusted_certificate_and_without(tmp_path: Path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async with raw_server(keepalive_ok, ssl_context=server_tls) as server:
        url = f"https://127.0.0.1:{server.port}/v1/x"
        async with client_for(ssl_context=client_tls) as client:
            assert await fetch(client, url, b"1") == (200, b"echo:1")
            assert await fetch(client, url, b"2") == (200, b"echo:2")
        assert server.connections == 1
        assert server.requests[0].header("Host") == f"127.0.0.1:{server.port}"

        async with client_for() as client:  # the system's trust store does not know it
            with pytest.raises(HTTPClientError, match="connect"):
                await client.request("POST", url, headers=JSON)


# Through a proxy: HTTPS in a CONNECT tunnel, plain HTTP in absolute form.


async def _https_through_a_proxy(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    async with (
        raw_server(keepalive_ok, ssl_context=server_tls) as server,
        fake_proxy() as proxy,
    ):
        proxies = Proxies({"https": f"http://tollgate:p%40ss@127.0.0.1:{proxy.port}"})
        async with client_for(ssl_context=client_tls, proxies=proxies) as client:
            url = f"https://127.0.0.1:{server.port}/v1/x"
            assert await fetch(client, url, b"1") == (200, b"echo:1")
            assert await fetch(client, url, b"2") == (200, b"echo:2")
        assert proxy.lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]  # one tunnel
        assert proxy.authorizations == ["Basic " + base64.b64encode(b"tollgate:p@ss").decode()]
        assert server.connections == 1
        assert server.requests[0].target == "/v1/x"  # the origin sees an ordinary request
        assert server.requests[0].header("Host") == f"127.0.0.1:{server.port}"
        assert server.requests[0].header("Proxy-Authorization") is None  # the proxy's alone


async def test_https_goes_through_a_connect_tunnel(tmp_path: Path):
    await _https_through_a_proxy(tmp_path)


def test_https_goes_through_a_connect_tunnel_on_uvloop(tmp_path: Path):
    """`tollgate serve` runs on uvloop, whose `start_tls` is its own."""
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(_https_through_a_proxy(tmp_path))
    finally:
        loop.close()


async def test_plain_http_goes_to_the_proxy_in_absolute_form():
    async with raw_server(keepalive_ok) as server, fake_proxy() as proxy:
        proxies = Proxies({"all": f"http://a:b@127.0.0.1:{proxy.port}"})
        async with client_for(proxies=proxies) as client:
            assert await fetch(client, server.url + "/v1/x?y=1", b"1") == (200, b"echo:1")
        target = f"http://127.0.0.1:{server.port}/v1/x?y=1"
        assert proxy.lines == [f"POST {target} HTTP/1.1"]
        assert proxy.authorizations == ["Basic " + base64.b64encode(b"a:b").decode()]
        assert server.requests[0].target == target


async def test_no_proxy_hosts_are_reached_directly():
    async with raw_server(keepalive_ok) as server, fake_proxy() as proxy:
        proxies = Proxies({"http": proxy.url, "no": "example.com, 127.0.0.1"})
        async with client_for(proxies=proxies) as client:
            assert await fetch(client, server.url, b"1") == (200, b"echo:1")
        assert proxy.lines == []
        assert server.requests[0].target == "/"


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [(" * ", "api.openai.com", 443, True), ("openai.com", "api.openai.com", 443, True),
     (".openai.com", "API.OpenAI.com", 443, True), ("openai.com", "notopenai.com", 443, False),
     ("a.com,*", "api.openai.com", 443, False),  # `*` counts only alone
     ("api.openai.com:443", "api.openai.com", 443, True),
     ("api.openai.com:8443", "api.openai.com", 443, False), ("", "api.openai.com", 443, False),
     ("localhost,\t127.0.0.1", "127.0.0.1", 80, True), ("10.0.0.0/8", "10.2.3.4", 443, True),
     ("10.0.0.0/8", "11.2.3.4", 443, False), ("[::1]:8443", "::1", 8443, True),
     ("[::1]:8443", "::1", 443, False), ("fd00::/8", "fd12::5", 443, True)],
)  # fmt: skip
def test_no_proxy_matching(no_proxy: str, host: str, port: int, bypassed: bool):
    proxies = Proxies({"https": "http://proxy.internal:3128", "no": no_proxy})
    assert (proxies.for_origin("https", host, port) is None) is bypassed


async def test_a_tunnel_the_proxy_refuses_is_a_client_error(tmp_path: Path):
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    async with (
        fake_proxy(refuse=refusal) as proxy,
        client_for(proxies=Proxies({"https": proxy.url})) as client,
    ):
        with pytest.raises(HTTPClientError, match=r"refused the tunnel.*407"):
            await client.request("POST", "https://127.0.0.1:9/v1/x", headers=JSON)
        assert client._open == 0


async def test_a_proxy_that_is_down_is_a_client_error():
    proxies = Proxies({"https": f"http://127.0.0.1:{free_port()}"})
    async with client_for(proxies=proxies) as client:
        with pytest.raises(HTTPClientError, match="connect"):
            await client.request("POST", "https://127.0.0.1:9/v1/x", headers=JSON)


async def test_a_proxy_that_never_answers_connect_runs_into_the_connect_timeout():
    async def silent(conn: Conn) -> None:
        await conn.until_gone()

    async with raw_server(silent) as proxy:
        async with client_for(proxies=Proxies({"https": proxy.url})) as client:
            with pytest.raises(TimeoutError):
                await client.request(
                    "POST", "https://127.0.0.1:9/v1/x", headers=JSON,
                    timeouts=Timeouts(connect=0.2),
                )  # fmt: skip
            assert client._open == 0
        await asyncio.wait_for(proxy.conns[0].gone.wait(), 1)  # its socket was closed


def test_only_http_proxies_in_use_are_taken(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="https:// calls must be an http:// URL"):
        Proxies({"https": "https://proxy.internal:3128"})
    # One that is never used is never looked at.
    Proxies({"https": "http://p:1", "http": "http://p:1", "all": "socks5://p:1080"})
    with pytest.raises(ValueError, match="not a valid URL") as refused:
        Proxies({"https": "http://user:pa/ss@proxy.internal:3128"})
    assert "pa/ss" not in str(refused.value)  # a password never reaches an error
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ConfigurationError, match="https:// calls"):
        upstream_proxies()
    with pytest.raises(ConfigurationError):  # before anything starts, in one line
        create_app(Settings(secret_key=SecretStr("k" * 48)))
