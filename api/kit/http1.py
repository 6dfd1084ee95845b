"""`HTTPClient`: a lean HTTP/1.1 client for the proxy's upstream calls.

Measured on the proxy's hot path, aiohttp's client cost about as much CPU per request as
everything else the gateway does (auth, caps, metering, the ledger) together: a request object,
a response object, a payload registry, a timer rescheduled on every read, several tasks. An
upstream call needs much less: one write of the request, httptools (the parser uvicorn uses) in
`data_received`, and a future for the head. So this client is an asyncio `Protocol` per
connection, pooled per origin with keep-alive.

What it does: `http`/`https` (TLS with the system's trust store), keep-alive pools with an
idle expiry, a limit on open connections, request bodies given as bytes, bodies read whole or
relayed as they arrive (reading pauses while the reader is behind), `gzip`/`deflate` answers,
a connect timeout, a read timeout (between bytes) and a total one. A request that finds its
pooled connection closed by the server before any byte of the answer (the server's keep-alive
timer ran out) goes once more on a new connection, as browsers do. Through an `http://` proxy
when one is given (`api/kit/proxies.py` picks it from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`
and `NO_PROXY`): HTTPS through a `CONNECT` tunnel, plain HTTP in absolute form. What it leaves
out: redirects, cookies, HTTP/2; upstream APIs need none of them.

Errors: `TimeoutError` for any timeout, `HTTPClientError` for everything else (refused or
broken connections, an answer that is not HTTP).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from api.kit.proxies import Proxies, Proxy

_BUFFER_HIGH = 256 * 1024  # unread answer bytes at which reading pauses
# `release_when_done`: what may still come after the reader's last read (a stream's closing
# chunk) before the connection is given up rather than kept.
_TAIL_BYTES = 16 * 1024
_TAIL_SECONDS = 2.0


class HTTPClientError(Exception):
    """The upstream could not be reached, or its answer broke off or was not HTTP."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = None
    read: float | None = None  # the longest wait for the next byte of the answer
    total: float | None = None  # from sending to the end of the answer (for a whole read)


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    proxy: Proxy | None = None

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.authority if self.port != default else self._host

    @property
    def authority(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal


class Response:
    """An answer: status and headers at once, the body read whole or as it arrives.

    Header names are lower-case; repeated headers are joined with ", ". `release()` gives the
    connection back for reuse if the body was read to its end, else closes it;
    `release_when_done()` waits a moment for the end first; `close()` always closes it (which
    is how an upstream generation is cancelled)."""

    def __init__(self, connection: _Connection, timeouts: Timeouts) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection: _Connection | None = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None
        self._timeouts = timeouts
        self._deadline = (
            connection.loop.time() + timeouts.total if timeouts.total is not None else None
        )
        self._tail: asyncio.TimerHandle | None = None  # set while `release_when_done` waits
        self._timer: asyncio.TimerHandle | None = None  # one for all the reader's waits: `_expire`
        self._wait_started = 0.0

    # What the connection tells the response.

    def _feed(self, data: bytes) -> None:
        if self._tail is not None:  # the reader is done: count what still comes, keep none
            self._buffered += len(data)
            if self._buffered > _TAIL_BYTES:
                self.close()
            return
        if self._decoder is not None:
            data = self._decoder.decompress(data)
            if not data:
                return
        self._chunks.append(data)
        self._buffered += len(data)
        connection = self._connection
        if self._buffered > _BUFFER_HIGH and connection is not None:
            connection.pause_reading()
        self._wake()

    def _finish(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        self._complete = True
        self._disarm()
        if self._tail is not None:
            self._tail.cancel()
            self.release()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._disarm()
        if not self._complete and self._error is None:
            self._error = error
            if self._tail is not None:
                self._tail.cancel()
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # What the caller does.

    async def read(self) -> bytes:
        """The whole body (within the total timeout)."""
        parts = [chunk async for chunk in self.chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: all that is in, as soon as it is in (the pieces of a chunked
        body that arrived together come as one)."""
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                connection = self._connection
                if connection is not None and connection.reading_paused:
                    connection.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._complete:
                return
            await self._wait()

    async def _wait(self) -> None:
        connection = self._connection
        assert connection is not None
        loop = connection.loop
        self._waiter = waiter = loop.create_future()
        self._wait_started = loop.time()
        if self._timer is None:
            self._arm(loop)
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _due(self) -> float | None:
        """When the wait going on times out: the read timeout after it began, or the deadline."""
        read = self._timeouts.read
        at = self._wait_started + read if read is not None else None
        if self._deadline is not None and (at is None or self._deadline < at):
            at = self._deadline
        return at

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        at = self._due()
        if at is not None:
            self._timer = loop.call_at(at, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer was set for an earlier wait, which may have ended since: fail the wait going
        on if it is overdue, else set the timer for it. A stream waits once per event; one timer
        moved on now and then costs less than one made and cancelled per wait."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():  # no wait going on: the next one sets the timer
            return
        at = self._due()
        if at is not None and at <= loop.time():
            self._fail(TimeoutError("The upstream stopped answering."))
        else:
            self._arm(loop)

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.done(self, reusable=self._complete and self._error is None)
            self._fail(HTTPClientError("The response was closed."))  # wakes a waiting reader

    def release_when_done(self) -> None:
        """`release()` for a reader that has all it wants of a body that has ended, or is
        about to: a stream whose last event was read, its closing chunk perhaps still on the
        way. The connection goes back to the pool once that end arrives; if more than a few
        KB come first, or nothing ends the body within seconds, it is closed."""
        connection = self._connection
        if connection is None or self._complete or self._error is not None:
            self.release()
            return
        if not connection.reusable:  # no keep-alive: nothing to wait for
            self.close()
            return
        self._disarm()
        self._chunks.clear()
        self._buffered = 0
        connection.resume_reading()
        self._tail = connection.loop.call_later(_TAIL_SECONDS, self.close)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.done(self, reusable=False)
            self._fail(HTTPClientError("The response was closed."))  # wakes a waiting reader


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods while parsing."""

    def __init__(self, pool: _Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.head: asyncio.Future[None] | None = None
        self.received = False  # any byte of the current answer
        self.reusable = False
        self.until_close = False  # an answer without a length, ended by closing
        self.closed = False
        self.reading_paused = False
        self.idle_since = 0.0
        self.uses = 0
        self._names: list[bytes] = []
        self._values: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing was asked: a server talking out of turn
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(HTTPClientError(f"The upstream's answer is not valid HTTP: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response._complete:
            if self.until_close and response.status:  # its end is the connection's
                response._finish()
            else:
                reason = f": {exc}" if exc is not None else ""
                self._broken(HTTPClientError(f"The upstream closed the connection{reason}."))
        self.pool.forget(self)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        # An answer nobody asked for (bytes after the end of the last one, in the same read):
        # none of it reaches the response, and the connection is not trusted with another.
        response = self.response
        if response is None or response._complete:
            self.response = None
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._names.append(name)
        self._values.append(value)

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        headers = response.headers
        for raw, value in zip(self._names, self._values, strict=True):
            name = raw.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        self._names.clear()
        self._values.clear()
        self.reusable = self.parser.should_keep_alive()
        self.until_close = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "")
            and response.status not in (204, 304)
        )
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding in ("gzip", "deflate"):
            response._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, by the header
        elif encoding != "identity":
            self._broken(HTTPClientError(f"The upstream answered in unsupported {encoding!r}."))
            return
        head = self.head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None:
            response._finish()

    # The pool's side

    def send(self, request: bytes, response: Response) -> asyncio.Future[None]:
        self.response = response
        self.received = False
        self.uses += 1
        self._names.clear()  # a chunked answer's trailers are not the next answer's headers
        self._values.clear()
        self.head = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self.head

    def done(self, response: Response, *, reusable: bool) -> None:
        if self.response is not response:
            return
        self.response = None
        self.head = None
        if reusable and self.reusable and not self.closed:
            self.resume_reading()
            self.idle_since = self.loop.time()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.pool.forget(self)

    def _broken(self, error: BaseException) -> None:
        self.reusable = False
        head = self.head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self.response is not None:
            self.response._fail(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class _Pool:
    """The idle connections to one origin."""

    def __init__(self, client: HTTPClient, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open: set[_Connection] = set()

    def put(self, connection: _Connection) -> None:
        self.idle.append(connection)
        self.client.slot_freed()

    def forget(self, connection: _Connection) -> None:
        if connection in self.open:
            self.open.discard(connection)
            self.client.slot_freed(closed=True)

    def take_idle(self, now: float, keepalive: float) -> _Connection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if not connection.closed and now - connection.idle_since < keepalive:
                return connection
            connection.close()
        return None


class HTTPClient:
    """Pooled keep-alive HTTP/1.1 connections, at most `max_connections` open at once."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        keepalive_seconds: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        self._proxies = proxies
        self._max = max_connections
        self._keepalive = keepalive_seconds
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._origins: dict[str, tuple[_Origin, str]] = {}
        self._ssl = ssl_context  # None: the system's trust store, made on first use
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes = b"",
        timeouts: Timeouts = Timeouts(),
    ) -> Response:
        """Send the request and return once the answer's head is in."""
        if self._closed:
            raise HTTPClientError("The client is closed.")
        origin, target = self._split(url)
        head = _head(method, target, origin, headers, len(body))
        request = head + body if len(body) < 65536 else b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total if timeouts.total is not None else None
        pool = self._pool(origin)
        for _ in range(2):
            connection = await self._acquire(pool, loop, timeouts)
            reused = connection.uses > 0
            response = Response(connection, timeouts)
            if request:
                waiter = connection.send(request, response)
            else:  # a large body: no copy of it
                waiter = connection.send(head, response)
                assert connection.transport is not None
                connection.transport.write(body)
            try:
                await _within(waiter, deadline, timeouts.read, loop)
            except HTTPClientError:
                stale = reused and not connection.received
                response.close()
                if stale:
                    continue  # the server closed it while it sat idle: once more, anew
                raise
            except BaseException:
                response.close()
                raise
            return response
        raise HTTPClientError("The upstream closed the connection.")

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for connection in list(pool.open):
                connection.close()
        self._pools.clear()
        while self._waiters:  # requests waiting for room: they raise instead
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # Connections

    def _split(self, url: str) -> tuple[_Origin, str]:
        known = self._origins.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HTTPClientError(f"Not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy = (
            self._proxies.for_origin(parts.scheme, parts.hostname, port) if self._proxies else None
        )
        origin = _Origin(parts.scheme, parts.hostname, port, proxy)
        if origin.proxy is not None and origin.scheme == "http":
            target = f"http://{origin.host_header}{target}"  # the absolute form a proxy takes
        found = (origin, target)
        if len(self._origins) < 10_000:  # a URL per model at most, in practice
            self._origins[url] = found
        return found

    def _pool(self, origin: _Origin) -> _Pool:
        key = (origin.scheme, origin.host, origin.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self, origin)
        return pool

    async def _acquire(
        self, pool: _Pool, loop: asyncio.AbstractEventLoop, timeouts: Timeouts
    ) -> _Connection:
        while True:
            connection = pool.take_idle(loop.time(), self._keepalive)
            if connection is not None:
                return connection
            if self._open < self._max:
                break
            if not self._evict_idle():
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self.slot_freed()  # woken, then cancelled: the next in line goes on
                    raise
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                if self._closed:
                    raise HTTPClientError("The client is closed.")
        connection = _Connection(pool, loop)
        pool.open.add(connection)
        self._open += 1
        try:
            await asyncio.wait_for(self._connect(connection, pool.origin, loop), timeouts.connect)
        except TimeoutError:
            connection.close()
            raise
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            raise HTTPClientError(f"Could not connect: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    async def _connect(
        self, connection: _Connection, origin: _Origin, loop: asyncio.AbstractEventLoop
    ) -> None:
        await self._dial(connection, origin, loop)
        if connection.closed:  # and forgotten already: nothing would ever answer on it
            raise HTTPClientError("The upstream closed the connection as it opened.")

    async def _dial(
        self, connection: _Connection, origin: _Origin, loop: asyncio.AbstractEventLoop
    ) -> None:
        tls = self._tls() if origin.scheme == "https" else None
        proxy = origin.proxy
        if proxy is None:
            await loop.create_connection(
                lambda: connection, origin.host, origin.port,
                ssl=tls, server_hostname=origin.host if tls else None,
            )  # fmt: skip
            return
        if tls is None:  # plain HTTP: the proxy takes the requests themselves
            await loop.create_connection(lambda: connection, proxy.host, proxy.port)
            return
        tunnel = _Tunnel(loop)
        transport, _ = await loop.create_connection(lambda: tunnel, proxy.host, proxy.port)
        try:
            await tunnel.open(transport, origin, proxy)
            secured = await loop.start_tls(transport, connection, tls, server_hostname=origin.host)
        except BaseException:
            transport.close()
            raise
        if secured is None:
            raise HTTPClientError("The proxy's tunnel closed during the TLS handshake.")
        connection.connection_made(secured)

    def _evict_idle(self) -> bool:
        """Close one idle connection (to any origin) to make room for a new one."""
        for pool in self._pools.values():
            if pool.idle:
                pool.idle.popleft().close()
                return True
        return False

    def slot_freed(self, *, closed: bool = False) -> None:
        """A connection went idle or closed: a request waiting for room may go on."""
        if closed:
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


class _Tunnel(asyncio.Protocol):
    """A proxy connection until its answer to `CONNECT`; then it carries TLS to the origin."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reply: asyncio.Future[bytes] = loop.create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._reply.done():
            return
        if b"\r\n\r\n" in self._buffer:
            self._reply.set_result(self._buffer)
        elif len(self._buffer) > 65536:
            self._reply.set_exception(HTTPClientError("The proxy's answer is not HTTP."))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._reply.done():
            reason = f": {exc}" if exc is not None else ""
            self._reply.set_exception(HTTPClientError(f"The proxy closed the connection{reason}."))

    async def open(self, transport: asyncio.BaseTransport, origin: _Origin, proxy: Proxy) -> None:
        lines = [f"CONNECT {origin.authority} HTTP/1.1\r\nHost: {origin.authority}\r\n"]
        if proxy.authorization is not None:
            lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
        transport.write(("".join(lines) + "\r\n").encode("latin-1"))  # type: ignore[attr-defined]
        reply = await self._reply
        status = reply.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, rest = status.partition(" ")
        if not version.startswith("HTTP/1.") or not rest.startswith("2"):
            raise HTTPClientError(f"The proxy refused the tunnel: {status[:120]!r}.")
        if not reply.endswith(b"\r\n\r\n") or reply.count(b"\r\n\r\n") > 1:
            raise HTTPClientError("The proxy sent more than its answer before the tunnel opened.")


def _head(
    method: str, target: str, origin: _Origin, headers: Mapping[str, str], length: int
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    proxy = origin.proxy
    if proxy is not None and proxy.authorization is not None and origin.scheme == "http":
        lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"The header {name!r} has a line break in it.")
        lines.append(f"{name}: {value}\r\n")
    # Compressed answers cost CPU on every read for bytes that are small or streamed anyway.
    lines.append(f"Accept-Encoding: identity\r\nContent-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


async def _within(
    waiter: asyncio.Future[None],
    deadline: float | None,
    read: float | None,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Wait for the answer's head, no longer than the read timeout or the total deadline."""
    at = loop.time() + read if read is not None else None
    if deadline is not None and (at is None or deadline < at):
        at = deadline
    if at is None:
        await waiter
        return
    timer = loop.call_at(at, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("The upstream did not answer in time."))
