"""`HTTPClient`: a lean HTTP/1.1 client for the proxy's upstream calls.

Measured on the proxy's hot path, aiohttp's client cost about as much CPU per request as
everything else the gateway does (auth, caps, metering, the ledger) together: a request object,
a response object, a payload registry, a timer rescheduled on every read, several tasks. An
upstream call needs much less: one write of the request, httptools (the parser uvicorn uses) in
`data_received`, and a future for the head. So this client is an asyncio `Protocol` per
connection, pooled per origin with keep-alive.

Why our own rather than aiohttp's, with the numbers measured for both:
`docs/decisions/0001-own-upstream-http-client.md`.

What it does: `http`/`https` (TLS with the system's trust store), keep-alive pools with an
idle expiry, a limit on open connections (and a lower one per origin, so one slow host cannot
take them all), request bodies given as bytes, bodies read whole or relayed as they arrive
(reading pauses while the reader is behind), `gzip`/`deflate` answers (inflated a step at a
time), 1xx answers skipped, a connect timeout (Happy Eyeballs across the host's addresses:
`api/kit/http1_connect.py`), a pool timeout (the wait for a connection), a read timeout
(between bytes) and a total one. A request that finds its pooled connection closed by the
server before any byte of the answer (the server's keep-alive timer ran out) goes once more on
a new connection, as browsers do. Through an `http://` proxy when one is given
(`api/kit/proxies.py` picks it from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`):
HTTPS through a `CONNECT` tunnel, plain HTTP in absolute form. What it leaves out: redirects,
cookies, HTTP/2; upstream APIs need none of them.

A client made with `check_peer` (tenants' own provider hosts) connects only to addresses it
accepts, judged after DNS. Every size an upstream controls is bounded (`Limits`,
`api/kit/http1_limits.py`).

Errors: `TimeoutError` for any timeout, `HTTPClientError` for everything else (refused or
broken connections, an answer that is not HTTP or over a limit).
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

from api.kit.http1_connect import PeerCheck, Resolver, open_connection, resolve
from api.kit.http1_limits import Limits, SlotQueue
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
    total: float | None = None  # from the call to the end of the answer (for a whole read)
    pool: float | None = None  # the longest wait for a connection when all are busy


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

    def __init__(
        self, connection: _Connection, timeouts: Timeouts, deadline: float | None, limits: Limits
    ) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection: _Connection | None = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False  # the answer's last byte is in (not necessarily inflated)
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: zlib._Decompress | None = None
        self._compressed = b""  # received, not inflated yet: reading pauses while there is any
        self._inflated = 0
        self._limits = limits
        self._timeouts = timeouts
        self._deadline = deadline
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
            self._compressed += data  # empty, or a step's left-over (one read at most)
            self._inflate_or_refuse()
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        connection = self._connection
        if self._buffered > _BUFFER_HIGH and connection is not None:
            connection.pause_reading()
        self._wake()

    def _inflate_or_refuse(self) -> None:
        """Inflate the next step of a compressed body: at most a buffer's worth at a time,
        the rest of the input kept (and reading paused) until the reader has taken it, so a
        few KB that inflate to GBs are never held whole."""
        decoder = self._decoder
        assert decoder is not None
        data = decoder.decompress(self._compressed, _BUFFER_HIGH)
        self._compressed = decoder.unconsumed_tail
        connection = self._connection
        if self._compressed and connection is not None:
            connection.pause_reading()
        if self._complete and not self._compressed:
            data += decoder.flush()
            self._decoder = None
        self._inflated += len(data)
        if self._inflated > self._limits.max_decompressed_bytes:
            limit = self._limits.max_decompressed_bytes
            self._refuse(HTTPClientError(f"The upstream's answer inflates to over {limit} bytes."))
        elif data:
            self._take(data)

    def _refuse(self, error: HTTPClientError) -> None:
        """Break the answer off with `error` (the reader gets it once it has taken what is in)
        and drop its connection."""
        if self._error is None:
            self._error = error
        self._wake()
        self.close()

    def _finish(self) -> None:
        if self._decoder is not None and not self._compressed:
            tail = self._decoder.flush()
            self._decoder = None
            if tail:
                self._take(tail)  # (bounded: input that inflated whole leaves a few KB)
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
        """The whole body (within the total timeout), up to the client's `max_body_bytes`."""
        limit = self._limits.max_body_bytes
        length = self.headers.get("content-length", "")
        if self._decoder is None and length.isdigit() and int(length) > limit:
            self.close()
            raise HTTPClientError(f"The upstream's answer is over {limit} bytes.")
        parts = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                self.close()
                raise HTTPClientError(f"The upstream's answer is over {limit} bytes.")
            parts.append(chunk)
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
                if connection is not None and connection.reading_paused and not self._compressed:
                    connection.resume_reading()
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._compressed:  # the reader took the last step: the next one
                self._inflate_or_refuse()
                connection = self._connection
                if connection is not None and connection.reading_paused and not self._compressed:
                    connection.resume_reading()
                continue
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
        self._compressed = b""
        connection.resume_reading()
        self._tail = connection.loop.call_later(_TAIL_SECONDS, self.close)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.done(self, reusable=False)
            self._fail(HTTPClientError("The response was closed."))  # wakes a waiting reader


class _Connection(asyncio.Protocol):
    """One keep-alive connection; httptools calls the `on_*` methods while parsing."""

    def __init__(self, pool: _Pool, loop: asyncio.AbstractEventLoop, limits: Limits) -> None:
        self.pool = pool
        self.loop = loop
        self.limits = limits
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
        # Bytes fed to the parser since it last gave anything out: what it may be holding (an
        # endless header line, trailer or chunk extension), which `on_header` never sees.
        self.held = 0
        self.informational = False  # parsing a 1xx answer, which the real one follows
        self._header_count = 0
        self._header_bytes = 0
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
        self.held += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # one of ours refused it (a limit)
            cause = exc.__context__
            if not isinstance(cause, HTTPClientError):
                cause = HTTPClientError(f"The upstream's answer is not valid HTTP: {exc}")
            self._broken(cause)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._broken(HTTPClientError(f"The upstream's answer is not valid HTTP: {exc}"))
        else:
            if self.held > self.limits.max_header_bytes:
                limit = self.limits.max_header_bytes
                self._broken(HTTPClientError(f"The upstream's headers are over {limit} bytes."))

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
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        limits = self.limits
        if self._header_count > limits.max_headers:
            raise HTTPClientError(f"The upstream sent over {limits.max_headers} headers.")
        if self._header_bytes > limits.max_header_bytes:
            raise HTTPClientError(
                f"The upstream's headers are over {limits.max_header_bytes} bytes."
            )
        self._names.append(name)
        self._values.append(value)

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise HTTPClientError("The upstream switched protocols unasked.")
            # 100 Continue, 103 Early Hints: the answer follows. Their bytes and headers count
            # towards the limits of the answer's own, so an endless run of them ends too.
            self.informational = True
            self._names.clear()
            self._values.clear()
            return
        self.held = 0
        response.status = status
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
        self.held = 0
        response = self.response
        if response is not None:
            response._feed(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.held = 0
        response = self.response
        if response is not None:
            response._finish()

    # The pool's side

    def send(self, request: bytes, response: Response) -> asyncio.Future[None]:
        self.response = response
        self.received = False
        self.uses += 1
        self.held = 0
        self.informational = False
        self._header_count = self._header_bytes = 0
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
    """The connections to one origin: the idle ones, and requests waiting for one."""

    def __init__(self, client: HTTPClient, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open: set[_Connection] = set()
        self.waiters = SlotQueue()  # at this origin's limit

    def put(self, connection: _Connection) -> None:
        self.idle.append(connection)
        if self.waiters:  # theirs to take
            self.waiters.wake()
        else:  # a request for another origin may close it to make room
            self.client.slot_freed()

    def forget(self, connection: _Connection) -> None:
        if connection in self.open:
            self.open.discard(connection)
            self.waiters.wake()
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
    """Pooled keep-alive HTTP/1.1 connections: at most `max_connections` open at once, and at
    most `max_connections_per_origin` (half of those unless given) to any one origin, so
    requests to a host that holds its connections open leave room for every other host.

    `check_peer` (for hosts a tenant named) is asked about each address the host resolves to;
    only those it accepts are connected to. `resolver` stands in for DNS (tests)."""

    def __init__(
        self,
        *,
        max_connections: int = 512,
        max_connections_per_origin: int | None = None,
        keepalive_seconds: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Proxies | None = None,
        limits: Limits = Limits(),
        check_peer: PeerCheck | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self._proxies = proxies
        self._max = max_connections
        per_origin = max_connections_per_origin or max(max_connections // 2, 1)
        self._max_per_origin = min(per_origin, max_connections)
        self._keepalive = keepalive_seconds
        self._limits = limits
        self._check_peer = check_peer
        self._resolver = resolver
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._open = 0
        self._waiters = SlotQueue()  # at the client's limit
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
            connection = await self._acquire(pool, loop, timeouts, deadline)
            reused = connection.uses > 0
            response = Response(connection, timeouts, deadline, self._limits)
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
            pool.waiters.wake_all()  # requests waiting for room: they raise instead
        self._pools.clear()
        self._waiters.wake_all()

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
        self,
        pool: _Pool,
        loop: asyncio.AbstractEventLoop,
        timeouts: Timeouts,
        deadline: float | None,
    ) -> _Connection:
        connection = pool.take_idle(loop.time(), self._keepalive)
        if connection is not None:
            return connection
        until = _earliest(loop, timeouts.pool, deadline)  # for all the waits below together
        while True:
            if len(pool.open) >= self._max_per_origin:
                await pool.waiters.wait(loop, until)  # other origins' requests go on meanwhile
            elif self._open < self._max:
                break
            elif not self._evict_idle():
                await self._waiters.wait(loop, until)
            if self._closed:
                raise HTTPClientError("The client is closed.")
            connection = pool.take_idle(loop.time(), self._keepalive)
            if connection is not None:
                return connection
        connection = _Connection(pool, loop, self._limits)
        pool.open.add(connection)
        self._open += 1
        connect_until = _earliest(loop, timeouts.connect, deadline)
        connect = None if connect_until is None else max(connect_until - loop.time(), 0.0)
        try:
            await asyncio.wait_for(self._connect(connection, pool.origin), connect)
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

    async def _connect(self, connection: _Connection, origin: _Origin) -> None:
        await open_connection(
            connection, origin.host, origin.port, origin.authority,
            tls=self._tls() if origin.scheme == "https" else None, proxy=origin.proxy,
            resolver=self._resolver, check_peer=self._check_peer,
        )  # fmt: skip
        if connection.closed:  # and forgotten already: nothing would ever answer on it
            raise HTTPClientError("The upstream closed the connection as it opened.")

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
        self._waiters.wake()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


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
    at = _earliest(loop, read, deadline)
    if at is None:
        await waiter
        return
    timer = loop.call_at(at, _expire, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _earliest(
    loop: asyncio.AbstractEventLoop, seconds: float | None, deadline: float | None
) -> float | None:
    """When a wait of `seconds` from now ends, bounded by `deadline` (None: neither)."""
    at = loop.time() + seconds if seconds is not None else None
    if deadline is not None and (at is None or deadline < at):
        at = deadline
    return at


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("The upstream did not answer in time."))
