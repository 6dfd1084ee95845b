"""Outgoing webhooks: the signature scheme of SPEC §5.5, URL checks, bounded delivery.

    X-Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

Receivers recompute the HMAC with their signing secret and reject timestamps older than 300 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import SplitResult, urlsplit

import httpx

from api.errors import InvalidRequest

SIGNATURE_HEADER = "X-Tollgate-Signature"
MAX_RESPONSE_BYTES = 64 * 1024


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


# IPv6 spellings that carry an IPv4 address: NAT64 (64:ff9b::/96), 6to4 (2002::/16) and the
# deprecated IPv4-compatible form (::a.b.c.d). Each must be judged by the IPv4 address inside.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    packed = int(ip)
    if ip in _NAT64 or (packed >> 32 == 0 and packed > 1):  # NAT64, or ::a.b.c.d
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def is_public_address(address: str) -> bool:
    """Whether a tenant-named host may be reached at `address` (an IP literal, as connected
    to): global unicast only, judging an IPv4 address carried inside IPv6 by itself."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public_address(str(inner))
    return ip.is_global and not ip.is_multicast


Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) → the IP literals to connect to; raises OSError when the name does not resolve."""


async def system_resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a name IDNA cannot encode ("a..b"): it resolves to nothing
        raise OSError(str(exc)) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def split_url(url: str, *, param: str) -> SplitResult:
    """`urlsplit`, with a malformed URL or an out-of-range port as a 400 naming `param`."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port outside 0-65535
    except ValueError:
        raise InvalidRequest(
            f"{param}: the URL is malformed or its port is out of range.", param=param
        ) from None
    return parts


async def check_url(
    url: str, *, allow_private: bool, param: str, resolve: Resolver = system_resolve
) -> None:
    """http(s) only; every address the host resolves to must be public unless allowed.

    An early, clear 400 when a URL is saved. What a name resolves to can change afterwards
    (DNS rebinding): the check that holds is the one at connect time (`api.kit.webhook_client`).
    """
    parts = split_url(url, param=param)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(f"{param}: must be an http or https URL.", param=param)
    if allow_private:
        return
    try:
        addresses = await resolve(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        )
    except OSError:
        raise InvalidRequest(f"{param}: the host does not resolve.", param=param) from None
    if not addresses or not all(is_public_address(address) for address in addresses):
        raise InvalidRequest(
            f"{param}: the host resolves to a private or loopback address.", param=param
        )


async def post_signed(
    client: httpx.AsyncClient, url: str, secret: str, body: bytes, *, timeout_seconds: float
) -> int:
    """One delivery attempt; returns the receiver's status. Redirects are not followed."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}
    async with client.stream(
        "POST", url, content=body, headers=headers, timeout=timeout_seconds,
        follow_redirects=False,
    ) as response:  # fmt: skip
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > MAX_RESPONSE_BYTES:
                break
        return response.status_code


class ResponseTooLarge(Exception):
    """The receiver's answer exceeded the size cap; the rest was not read."""


async def call_signed(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    body: bytes,
    *,
    timeout_seconds: float,
    idempotency_key: str,
    max_response_bytes: int,
) -> tuple[int, bytes]:
    """One signed POST whose answer matters (tool calls): its status and body, read up to
    `max_response_bytes` (beyond that `ResponseTooLarge`). Redirects are not followed."""
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": idempotency_key,
        SIGNATURE_HEADER: signature(secret, body),
    }
    async with client.stream(
        "POST", url, content=body, headers=headers, timeout=timeout_seconds,
        follow_redirects=False,
    ) as response:  # fmt: skip
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > max_response_bytes:
                raise ResponseTooLarge()
            chunks.append(chunk)
        return response.status_code, b"".join(chunks)
