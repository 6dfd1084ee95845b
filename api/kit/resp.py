"""A pipelined Redis connection for the proxy's two per-request Lua scripts.

Every proxied request runs a reservation script before it is forwarded and a settlement
script after. Through redis-py's asyncio client each call measured about a third of a proxied
request's CPU (a pool lock, StreamReader/StreamWriter, per-command retry wrappers). Here all
commands of the process share one connection: each is written at once and its reply matched
in order (Redis answers a connection's commands in the order it received them), parsed by
hiredis, the same C parser redis-py uses. Everything else keeps using redis-py.

Errors are redis-py's (`ConnectionError`, `TimeoutError`, `ResponseError`), so callers handle
both clients alike. A lost connection fails the commands in flight; the next call reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
from typing import Any

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command in RESP: an array of bulk strings (hiredis's packer, in C)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub: 1-tuples
    return packed


class _Protocol(asyncio.Protocol):
    """Commands written in the same event-loop turn go out in one write; a watchdog aborts the
    connection when the oldest command has waited longer than `timeout` (no timer per call)."""

    def __init__(self, timeout: float) -> None:
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's too)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small commands must not wait for the previous one's ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._watchdog = self._loop.call_later(self._timeout, self._check)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            reply = self._reader.gets()
            if reply is False:
                return
            waiter, _ = self._waiting.popleft()
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ResponseError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        error: Exception = RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}")
        if isinstance(exc, RedisTimeoutError):
            error = exc
        while self._waiting:
            waiter, _ = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        if self.closed or self.transport is None:
            raise RedisConnectionError("Connection to Redis is closed.")
        waiter = self._loop.create_future()
        self._waiting.append((waiter, self._loop.time()))
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(pack(args))
        return waiter

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _check(self) -> None:
        if self._waiting and self._loop.time() - self._waiting[0][1] > self._timeout:
            # Replies can no longer be trusted to line up: fail everything, start afresh.
            self.connection_lost(RedisTimeoutError("Redis did not answer in time."))
            if self.transport is not None:
                self.transport.abort()
            return
        self._watchdog = self._loop.call_later(self._timeout / 4, self._check)


class PipelinedRedis:
    def __init__(self, url: str, *, timeout_seconds: float = 5.0) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        if url.startswith(("rediss://", "unix://")):
            raise ValueError("PipelinedRedis speaks plain TCP only")
        self._host = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._setup: list[tuple[Arg, ...]] = []
        if options.get("password"):
            username = options.get("username")
            self._setup.append(
                ("AUTH", username, options["password"]) if username else
                ("AUTH", options["password"])
            )  # fmt: skip
        if options.get("db"):
            self._setup.append(("SELECT", int(options["db"])))
        self._timeout = timeout_seconds
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith("redis://")

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        async with self._connecting:
            protocol = self._protocol
            if protocol is not None and not protocol.closed:
                return protocol
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout):
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self._timeout), self._host, self._port
                    )
                    for command in self._setup:
                        await protocol.send(command)
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"Cannot connect to Redis: {exc}") from exc
            self._protocol = protocol
            return protocol

    async def execute(self, *args: Arg) -> Any:
        protocol = await self._connection()
        return await protocol.send(args)

    async def close(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._protocol = None


class Script:
    """`EVALSHA`, loading the script with `EVAL` the first time a server does not know it."""

    def __init__(self, client: PipelinedRedis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Arg]) -> Any:
        try:
            return await self._client.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self._client.execute("EVAL", self._source, len(keys), *keys, *args)
