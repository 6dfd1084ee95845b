"""Opening a connection for `api/kit/http1.py`: the host's addresses in turn, interleaved by
family, a new attempt every 0.25 s while the earlier ones still try (Happy Eyeballs, RFC 8305),
so a dead IPv6 route costs a quarter of a second instead of the whole connect timeout; only to
addresses the caller may reach (`check_peer`), judged after DNS, on the very address connected
to, so a name that resolves to a private address (or starts to) is never dialled; directly or
through an `http://` proxy (a `CONNECT` tunnel for HTTPS).

asyncio's `create_connection(happy_eyeballs_delay=...)` does the first part, but uvloop's (which
serves production) does not take the argument, and neither lets a caller judge an address
before connecting to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from api.kit.proxies import Proxy

HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended "Connection Attempt Delay"

Address = tuple[int, tuple[Any, ...]]  # (family, sockaddr), as getaddrinfo gives them
Resolver = Callable[[str, int], Awaitable[list[Address]]]
PeerCheck = Callable[[str], bool]  # an IP address (as text) → whether it may be reached


class ConnectError(OSError):
    """The connection could not be opened (beyond what the socket says: a proxy's refusal)."""


class PeerRefused(ConnectError):
    """No address of the host is one this client may reach."""


async def open_connection(
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    authority: str,  # host:port as a request line has it (IPv6 in brackets)
    *,
    tls: ssl.SSLContext | None,
    proxy: Proxy | None,
    resolver: Resolver,
    check_peer: PeerCheck | None,
) -> None:
    """Connect `protocol` to `host` (through `proxy` if given; TLS if `tls`)."""
    loop = asyncio.get_running_loop()
    if proxy is None:
        found = await addresses(host, port, resolver, check_peer)
        await _open_on(loop, protocol, await connect_first(found), tls, host)
        return
    if check_peer is not None:
        # The proxy resolves the name again on its own: this judges what it will most likely
        # reach, and a proxy that filters by address is the stronger check.
        await addresses(host, port, resolver, check_peer)
    sock = await connect_first(await addresses(proxy.host, proxy.port, resolver, None))
    if tls is None:  # plain HTTP: the proxy takes the requests themselves
        await _open_on(loop, protocol, sock, None, None)
        return
    tunnel = _Tunnel(loop)
    try:
        transport, _ = await loop.create_connection(lambda: tunnel, sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        await tunnel.open(transport, authority, proxy.authorization)
        secured = await loop.start_tls(transport, protocol, tls, server_hostname=host)
    except BaseException:
        transport.close()
        raise
    if secured is None:
        raise ConnectError("The proxy's tunnel closed during the TLS handshake.")
    protocol.connection_made(secured)


async def _open_on(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    sock: socket.socket,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
) -> None:
    try:
        await loop.create_connection(
            lambda: protocol, sock=sock, ssl=tls, server_hostname=server_hostname if tls else None
        )
    except BaseException:
        sock.close()
        raise


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
            self._reply.set_exception(ConnectError("The proxy's answer is not HTTP."))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._reply.done():
            reason = f": {exc}" if exc is not None else ""
            self._reply.set_exception(ConnectError(f"The proxy closed the connection{reason}."))

    async def open(
        self, transport: asyncio.BaseTransport, authority: str, authorization: str | None
    ) -> None:
        lines = [f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"]
        if authorization is not None:
            lines.append(f"Proxy-Authorization: {authorization}\r\n")
        transport.write(("".join(lines) + "\r\n").encode("latin-1"))  # type: ignore[attr-defined]
        reply = await self._reply
        status = reply.split(b"\r\n", 1)[0].decode("latin-1")
        version, _, rest = status.partition(" ")
        if not version.startswith("HTTP/1.") or not rest.startswith("2"):
            raise ConnectError(f"The proxy refused the tunnel: {status[:120]!r}.")
        if not reply.endswith(b"\r\n\r\n") or reply.count(b"\r\n\r\n") > 1:
            raise ConnectError("The proxy sent more than its answer before the tunnel opened.")


async def resolve(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


async def addresses(
    host: str, port: int, resolver: Resolver, check_peer: PeerCheck | None
) -> list[Address]:
    """Where `host` may be reached, in the order to try them."""
    found = _literal(host, port) or await resolver(host, port)
    if check_peer is not None:
        found = [address for address in found if check_peer(str(address[1][0]))]
        if not found:
            raise PeerRefused(f"{host} resolves to no address this client may reach.")
    if not found:
        raise OSError(f"{host} resolves to no address.")
    # Alternate the families, the first one first (RFC 8305 §4).
    families: dict[int, list[Address]] = {}
    for address in found:
        families.setdefault(address[0], []).append(address)
    rounds = itertools.zip_longest(*families.values())
    return [address for tried in rounds for address in tried if address is not None]


def _literal(host: str, port: int) -> list[Address] | None:
    if "%" in host:  # an IPv6 address with a zone: getaddrinfo knows the interface's index
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (host, port, 0, 0))]
    return [(socket.AF_INET, (host, port))]


async def connect_first(found: list[Address], delay: float = HAPPY_EYEBALLS_DELAY) -> socket.socket:
    """A connected socket to the first of `found` to answer: one attempt starts every `delay`
    seconds, or at once when the one before failed; the others are then abandoned."""
    loop = asyncio.get_running_loop()
    if len(found) == 1:
        return await _connect(loop, found[0])
    attempts: set[asyncio.Task[socket.socket]] = set()
    errors: list[OSError] = []
    try:
        for address in found:
            attempts.add(loop.create_task(_connect(loop, address)))
            winner = await _first(attempts, errors, delay)
            if winner is not None:
                return winner
        while attempts:
            winner = await _first(attempts, errors, None)
            if winner is not None:
                return winner
    finally:
        for task in attempts:  # still trying: whatever they end with is dropped
            task.cancel()
            task.add_done_callback(_drop)
    if len(errors) == 1:
        raise errors[0]
    raise OSError(f"Every address failed: {'; '.join(str(error) for error in errors)}")


async def _first(
    attempts: set[asyncio.Task[socket.socket]], errors: list[OSError], within: float | None
) -> socket.socket | None:
    """Wait up to `within` seconds for an attempt to end: the first that connected, if any."""
    done, _ = await asyncio.wait(attempts, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    winner = None
    for task in done:
        attempts.discard(task)
        error = task.exception()
        if error is None:
            if winner is None:
                winner = task.result()
            else:
                task.result().close()
        elif isinstance(error, OSError):
            errors.append(error)
        else:
            raise error
    return winner


async def _connect(loop: asyncio.AbstractEventLoop, address: Address) -> socket.socket:
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _drop(task: asyncio.Task[socket.socket]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()  # connected just as it was abandoned
