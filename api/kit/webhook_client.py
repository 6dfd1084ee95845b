"""The HTTP client for hosts tenants name: tool webhooks, alert webhooks, billing notices.

Checking a URL when it is saved is not enough. A name can resolve to a public address when it
is checked and to 127.0.0.1 when it is connected to (DNS rebinding), and httpx resolves names
again at connect time. Here the connection itself resolves the name once, refuses it when any
address is not public (unless private addresses are allowed), and connects to the checked IP
literal. TLS (SNI and the certificate's name) and the Host header still use the name: httpcore
hands `start_tls` and the request the URL's host, never the address `connect_tcp` was given.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import anyio
import httpcore
import httpx

from api.kit.webhooks import Resolver, is_public_address, system_resolve


class AddressRefused(httpcore.ConnectError):
    """The host resolves to a private or loopback address: nothing was connected to. httpx
    raises it as an `httpx.ConnectError` caused by this one (see `refused`)."""


def refused(exc: BaseException) -> bool:
    """Whether a failed request was refused for its host's address (retrying will not help)."""
    return isinstance(exc, AddressRefused) or isinstance(exc.__cause__, AddressRefused)


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking each host before connecting."""

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolve) -> None:
        self._allow_private = allow_private
        self._resolve = resolve
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):  # resolving counts against the connect timeout
                return await self._connect(host, port, local_address, socket_options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None

    async def _connect(
        self,
        host: str,
        port: int,
        local_address: str | None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = list(await self._resolve(host, port))
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if not self._allow_private and not all(is_public_address(a) for a in addresses):
            raise AddressRefused(f"{host} resolves to a private or loopback address")
        # One address after the other, not Happy Eyeballs: the connect timeout bounds them all.
        for address in addresses[:-1]:
            try:
                return await self._inner.connect_tcp(
                    address, port, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return await self._inner.connect_tcp(
            addresses[-1], port, local_address=local_address, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def create_webhook_client(
    *,
    allow_private: bool,
    resolve: Resolver = system_resolve,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """A client whose every connection goes through `CheckedBackend`. It follows no redirects
    and uses no proxy from the environment (a proxy would connect past the check). `resolve`
    and `verify` are for tests: a resolver that flips, a certificate authority of their own."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx's transport takes no network backend but its httpcore pool does: swap the pool for
    # one that connects through the check, with httpx's default limits.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=CheckedBackend(allow_private=allow_private, resolve=resolve),
    )
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
