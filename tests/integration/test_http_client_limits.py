"""What a hostile upstream can make the HTTP client (`api/kit/http1.py`) hold or wait for: header
count and size, 1xx answers, bodies read whole, compressed bodies, SSE lines, connections per
origin and the wait for one, Happy Eyeballs, and the address check for tenants' own hosts.

The raw loopback servers come from `test_http_client.py`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop

from api.gateway.sse import SSETooLarge, parse_sse
from api.kit.http1 import HTTPClient, HTTPClientError, Timeouts
from api.kit.http1_connect import Address, addresses, connect_first
from api.kit.http1_limits import MIB, Limits
from api.kit.proxies import Proxies
from api.kit.webhooks import is_public_address
from tests.fakes.proxy import fake_proxy
from tests.integration.test_http_client import (
    JSON,
    Conn,
    _self_signed,
    answer,
    client_for,
    fetch,
    keepalive_ok,
    raw_server,
)

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@functools.cache
def _gzip_bomb(mib: int) -> bytes:
    """`mib` MiB of zeros, gzipped: about a thousandth of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MIB)
    return b"".join([*(compressor.compress(zeros) for _ in range(mib)), compressor.flush()])


async def _endless(conn: Conn, head: bytes, piece: bytes) -> None:
    """`head`, then `piece` as chunks until the client goes."""
    await conn.send(head + b"\r\n")
    with contextlib.suppress(ConnectionError):
        while True:
            await conn.send(_chunk(piece))


# Headers.


async def test_too_many_headers_is_an_error_and_the_connection_is_closed():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        flood = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
        await conn.send(b"HTTP/1.1 200 OK\r\n" + flood + b"Content-Length: 2\r\n\r\nok")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="over 100 headers"):
            await client.request("POST", server.url, headers=JSON)
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)
        assert client._open == 0


async def test_headers_over_the_size_limit_are_an_error():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(answer(b"ok", headers=f"X-Big: {'a' * 70_000}\r\n"))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="headers are over 65536 bytes"):
            await client.request("POST", server.url, headers=JSON)


async def test_a_header_line_that_never_ends_is_an_error_once_past_the_limit():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        with contextlib.suppress(ConnectionError):
            while True:
                await conn.send(b"a" * 4096)

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="headers are over"):
            await asyncio.wait_for(client.request("POST", server.url, headers=JSON), 5)
        await asyncio.wait_for(server.conns[0].ended.wait(), 1)


async def test_endless_trailers_are_an_error():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(CHUNKED + b"\r\n" + _chunk(b"body") + b"0\r\nX-Trailer: ")
        with contextlib.suppress(ConnectionError):
            while True:
                await conn.send(b"a" * 4096)

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError, match="headers are over"):
            await asyncio.wait_for(response.read(), 5)


# 1xx answers.


async def test_informational_answers_before_the_answer_are_skipped():
    async def handler(conn: Conn) -> None:
        while (seen := await conn.request()) is not None:
            await conn.send(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            )
            await asyncio.sleep(0.01)  # and the answer in another read
            await conn.send(answer(b"echo:" + seen.body, headers="X-Final: yes\r\n"))

    async with raw_server(handler) as server, client_for() as client:
        response = await client.request("POST", server.url, headers=JSON, body=b"1")
        assert response.status == 200
        assert response.headers["x-final"] == "yes"
        assert "link" not in response.headers
        assert await response.read() == b"echo:1"
        response.release()
        assert await fetch(client, server.url, b"2") == (200, b"echo:2")
    assert server.connections == 1  # kept alive across both


async def test_an_endless_run_of_informational_answers_is_an_error():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        with contextlib.suppress(ConnectionError):
            while True:
                await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="headers are over"):
            await asyncio.wait_for(client.request("POST", server.url, headers=JSON), 5)


async def test_switching_protocols_unasked_is_an_error():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
        await conn.until_gone()

    async with raw_server(handler) as server, client_for() as client:
        with pytest.raises(HTTPClientError, match="switched protocols"):
            await client.request("POST", server.url, headers=JSON)


# Bodies.

SMALL = Limits(max_body_bytes=MIB, max_decompressed_bytes=4 * MIB)


async def test_a_declared_length_over_the_body_limit_is_refused_before_reading():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MIB + 1))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for(limits=SMALL) as client:
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError, match=f"over {MIB} bytes"):
            await asyncio.wait_for(response.read(), 1)
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)


async def test_an_endless_body_read_whole_stops_at_the_limit():
    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await _endless(conn, CHUNKED, b"x" * 65536)

    async with raw_server(handler) as server, client_for(limits=SMALL) as client:
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError, match=f"over {MIB} bytes"):
            await asyncio.wait_for(response.read(), 5)
        await asyncio.wait_for(server.conns[0].ended.wait(), 1)
        assert client._open == 0


async def test_the_body_limit_is_for_whole_reads_only():
    body = b"y" * (3 * MIB)

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(answer(body))

    async with raw_server(handler) as server, client_for(limits=SMALL) as client:
        response = await client.request("POST", server.url, headers=JSON)
        assert b"".join([chunk async for chunk in response.chunks()]) == body
        response.release()


async def test_a_gzip_bomb_read_whole_fails_at_the_limit():
    bomb = _gzip_bomb(64)

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(answer(bomb, headers="Content-Encoding: gzip\r\n"))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for(limits=SMALL) as client:
        response = await client.request("POST", server.url, headers=JSON)
        with pytest.raises(HTTPClientError, match="over"):
            await asyncio.wait_for(response.read(), 5)
        await asyncio.wait_for(server.conns[0].gone.wait(), 1)


async def test_a_gzip_bomb_streamed_is_inflated_a_step_at_a_time_up_to_the_limit():
    bomb = _gzip_bomb(64)

    async def handler(conn: Conn) -> None:
        assert await conn.request() is not None
        await conn.send(answer(bomb, headers="Content-Encoding: gzip\r\n"))
        await conn.until_gone()

    async with raw_server(handler) as server, client_for(limits=SMALL) as client:
        response = await client.request("POST", server.url, headers=JSON)
        pieces: list[int] = []

        async def read() -> None:
            async for chunk in response.chunks():
                pieces.append(len(chunk))

        with pytest.raises(HTTPClientError, match=f"inflates to over {4 * MIB} bytes"):
            await read()
        assert max(pieces) <= 256 * 1024  # never more than a step in hand
        assert 3 * MIB < sum(pieces) <= 4 * MIB


async def test_a_large_compressed_answer_within_the_limit_arrives_whole():
    body = b"".join(b"line %d of a long answer\n" % i for i in range(200_000))  # ~5 MB

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            compressed = gzip_member(body)
            await conn.send(CHUNKED + b"Content-Encoding: gzip\r\n\r\n")
            for start in range(0, len(compressed), 1000):
                await conn.send(_chunk(compressed[start : start + 1000]))
            await conn.send(b"0\r\n\r\n")

    async with raw_server(handler) as server, client_for() as client:
        assert await fetch(client, server.url) == (200, body)
        assert await fetch(client, server.url) == (200, body)  # and the connection was kept
    assert server.connections == 1


def gzip_member(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


# Connections: per origin, and the wait for one.


@contextlib.asynccontextmanager
async def _held_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A host that answers only once `go` is set: its connections stay busy until then."""
    go = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while (seen := await conn.request()) is not None:
            await go.wait()
            await conn.send(answer(b"late:" + seen.body))

    async with raw_server(handler) as server:
        yield server.url, go


async def test_a_slow_origin_holds_at_most_its_share_and_others_go_on():
    async with (
        _held_server() as (slow, go),
        raw_server(keepalive_ok) as fast,
        client_for(max_connections=4) as client,
    ):
        assert client._max_per_origin == 2
        held = [asyncio.ensure_future(fetch(client, slow, b"%d" % i)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert client._open == 2  # the third waits for one of the slow host's two
        for i in range(4):  # meanwhile another host is served, without waiting
            assert await asyncio.wait_for(fetch(client, fast.url, b"%d" % i), 1) == (
                200,
                b"echo:%d" % i,
            )
        go.set()
        results = await asyncio.wait_for(asyncio.gather(*held), 2)
        assert results == [(200, b"late:%d" % i) for i in range(3)]


async def test_the_wait_for_a_connection_is_bounded_by_the_pool_timeout():
    async with _held_server() as (slow, go), client_for(max_connections=1) as client:
        first = asyncio.ensure_future(fetch(client, slow, b"1"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="came free"):
            await fetch(client, slow, b"2", timeouts=Timeouts(pool=0.2))
        assert 0.15 < time.monotonic() - started < 0.6
        go.set()
        assert await first == (200, b"late:1")


async def test_the_total_timeout_bounds_the_wait_for_a_connection_too():
    async with _held_server() as (slow, go), client_for(max_connections=1) as client:
        first = asyncio.ensure_future(fetch(client, slow, b"1"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await fetch(client, slow, b"2", timeouts=Timeouts(pool=10, total=0.2))
        assert 0.15 < time.monotonic() - started < 0.6
        go.set()
        await first


# Connecting: Happy Eyeballs, and the address check.


@contextlib.contextmanager
def _black_hole() -> Iterator[int]:
    """A port whose connections neither succeed nor fail for a second: a listener that never
    accepts, its queue full (Linux then drops SYNs), like a dead route."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_a_dead_first_address_costs_the_happy_eyeballs_delay_not_the_timeout():
    with _black_hole() as dead:
        async with raw_server(keepalive_ok) as server:

            async def resolver(host: str, port: int) -> list[Address]:
                assert host == "upstream.test"
                return [(socket.AF_INET, ("127.0.0.1", dead)),
                        (socket.AF_INET, ("127.0.0.1", server.port))]  # fmt: skip

            async with client_for(resolver=resolver) as client:
                started = time.monotonic()
                status, body = await fetch(
                    client, "http://upstream.test/", b"1", timeouts=Timeouts(connect=5)
                )
                assert (status, body) == (200, b"echo:1")
                assert 0.2 < time.monotonic() - started < 1.0


def test_connecting_on_uvloop(tmp_path: Path):
    """`tollgate serve` runs on uvloop: its `sock_connect` and `create_connection(sock=...)`
    (plain and TLS) carry Happy Eyeballs and the address check."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def run() -> None:
        async with raw_server(keepalive_ok, ssl_context=server_tls) as server:
            tls = ssl.create_default_context(cafile=str(cert))
            async with client_for(ssl_context=tls) as client:
                url = f"https://127.0.0.1:{server.port}/"
                assert await fetch(client, url, b"tls") == (200, b"echo:tls")
            async with client_for(ssl_context=tls, check_peer=is_public_address) as client:
                with pytest.raises(HTTPClientError, match="no address"):
                    await fetch(client, url)
        await test_a_dead_first_address_costs_the_happy_eyeballs_delay_not_the_timeout()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


async def test_addresses_alternate_between_families():
    v6 = [(socket.AF_INET6, (f"2001:db8::{i}", 443, 0, 0)) for i in (1, 2, 3)]
    v4 = [(socket.AF_INET, (f"192.0.2.{i}", 443)) for i in (1, 2)]

    async def resolver(host: str, port: int) -> list[Address]:
        return [*v6, *v4]

    found = await addresses("upstream.test", 443, resolver, None)
    assert found == [v6[0], v4[0], v6[1], v4[1], v6[2]]
    assert await addresses("192.0.2.9", 80, resolver, None) == [(socket.AF_INET, ("192.0.2.9", 80))]


async def test_every_address_refused_is_the_last_error():
    ports = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        sock.close()  # nothing listens there now
    with pytest.raises(OSError, match="Every address failed"):
        await connect_first([(socket.AF_INET, ("127.0.0.1", port)) for port in ports])


async def test_a_host_that_resolves_to_a_private_address_is_never_dialled():
    async with raw_server(keepalive_ok) as server:
        async with client_for(check_peer=is_public_address) as client:
            for url in (f"http://localhost:{server.port}/v1", server.url):
                with pytest.raises(HTTPClientError, match="no address this client may reach"):
                    await client.request("POST", url, headers=JSON)
            assert client._open == 0
        await asyncio.sleep(0.05)
    assert server.connections == 0


async def test_only_the_addresses_the_check_accepts_are_dialled():
    with _black_hole() as dead:
        async with raw_server(keepalive_ok) as server:

            async def resolver(host: str, port: int) -> list[Address]:
                return [(socket.AF_INET, ("127.0.0.2", dead)),
                        (socket.AF_INET, ("127.0.0.1", server.port))]  # fmt: skip

            check = functools.partial(str.__eq__, "127.0.0.1")
            async with client_for(check_peer=check, resolver=resolver) as client:
                started = time.monotonic()
                assert await fetch(client, "http://upstream.test/", b"1") == (200, b"echo:1")
                assert time.monotonic() - started < 0.2  # the refused one was never tried


async def test_through_a_proxy_the_host_is_checked_before_the_tunnel():
    async with fake_proxy() as proxy:
        proxies = Proxies({"https": proxy.url, "http": proxy.url})
        async with client_for(proxies=proxies, check_peer=is_public_address) as client:
            for url in ("https://localhost:9/v1", "http://localhost:9/v1"):
                with pytest.raises(HTTPClientError, match="no address this client may reach"):
                    await client.request("POST", url, headers=JSON)
        assert proxy.lines == []


# Everything at once.


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


async def _hostile(conn: Conn) -> None:
    seen = await conn.request()
    assert seen is not None
    if seen.target == "/bomb":
        await conn.send(answer(_gzip_bomb(256), headers="Content-Encoding: gzip\r\n"))
        await conn.until_gone()
    elif seen.target == "/headers":
        flood = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
        await conn.send(b"HTTP/1.1 200 OK\r\n" + flood + b"Content-Length: 2\r\n\r\nok")
        await conn.until_gone()
    elif seen.target == "/endless":
        await _endless(conn, CHUNKED, b"x" * 65536)
    else:  # an event stream whose first line never ends
        head = CHUNKED + b"Content-Type: text/event-stream\r\n"
        await conn.send(head + b"\r\n" + _chunk(b"data: "))
        with contextlib.suppress(ConnectionError):
            while True:
                await conn.send(_chunk(b"x" * 65536))


async def _fails_cleanly(client: HTTPClient, url: str, *, stream: bool = False) -> BaseException:
    try:
        response = await client.request("POST", url, headers=JSON)
    except HTTPClientError as exc:
        return exc
    try:
        if stream:
            async for _ in parse_sse(response.chunks()):
                pass
        else:
            await response.read()
    except (HTTPClientError, SSETooLarge) as exc:
        return exc
    finally:
        response.close()
    raise AssertionError(f"{url} did not fail")


async def test_a_hostile_upstream_fails_cleanly_in_bounded_memory_while_others_flow():
    """A gzip bomb (256 MiB of zeros), 10,000 headers, an endless body and an SSE line that
    never ends, all at once, while another origin is asked again and again.
    The body limit is 8 MiB here: the default 64 MiB would be this test's whole budget."""
    if not _peak_rss_reset():
        pytest.skip("the peak RSS cannot be reset here")
    _gzip_bomb(256)  # made before measuring
    limits = Limits(max_body_bytes=8 * MIB, max_decompressed_bytes=16 * MIB)
    async with (
        raw_server(_hostile) as hostile,
        raw_server(keepalive_ok) as good,
        client_for(limits=limits) as client,
    ):
        await fetch(client, good.url)
        before = _rss_mb()
        _peak_rss_reset()
        answered: list[float] = []
        done = asyncio.Event()

        async def meanwhile() -> None:
            while not done.is_set():
                started = time.monotonic()
                assert await fetch(client, good.url, b"ok") == (200, b"echo:ok")
                answered.append(time.monotonic() - started)

        others = asyncio.ensure_future(meanwhile())
        errors = await asyncio.wait_for(
            asyncio.gather(
                *(
                    _fails_cleanly(client, hostile.url + path, stream=path == "/sse")
                    for path in ("/bomb", "/headers", "/endless", "/sse")
                )
            ),
            20,
        )
        done.set()
        await others
        grown = _peak_rss_mb() - before
        # Every hostile connection was closed.
        await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in hostile.conns)), 2)
    messages = [str(error) for error in errors]
    assert "over 8388608 bytes" in messages[0]  # the bomb, read whole: the body limit
    assert "over 100 headers" in messages[1]
    assert "over 8388608 bytes" in messages[2]
    assert isinstance(errors[3], SSETooLarge)
    assert grown < 50, f"peak RSS grew {grown:.0f} MB"
    assert len(answered) >= 3
    assert max(answered) < 0.5  # never stuck behind the hostile host
