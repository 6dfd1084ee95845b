"""Which forward proxy an upstream call goes through, as the environment says
(`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read by `urllib.request.getproxies()`).
`api/kit/http1.py` connects through it."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    # `Proxy-Authorization`, from credentials in its URL (kept out of reprs and tracebacks)
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, calls: str) -> Proxy:
        """The proxy at `url` for `calls` (`http` or `https`); the errors never quote the URL,
        which may carry a password."""
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port or 80
        except ValueError:
            raise ValueError(
                f"The proxy for {calls}:// calls is not a valid URL (a / or # in its password "
                "must be percent-encoded)."
            ) from None
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"The proxy for {calls}:// calls must be an http:// URL, not {parts.scheme}://."
            )
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        return cls(parts.hostname, port, authorization)


class Proxies:
    """Which proxy a URL goes through, from proxy URLs by scheme (`http`, `https`; `all` for
    either) and the hosts that bypass them (`no`), as `urllib.request.getproxies()` gives
    them. Only the proxies in use are parsed: a `socks5://` `ALL_PROXY` beside an `http://`
    `HTTPS_PROXY` and `HTTP_PROXY` is never looked at. Raises `ValueError` for one that is
    in use and cannot be (not `http://`, or not a URL).

    `no` reads as curl and requests read `NO_PROXY`: `*` alone for every host, else names
    and domains (`example.com` also covers `api.example.com`), IP addresses and CIDR ranges
    (`10.0.0.0/8`), each with an optional `:port` (`[::1]:8443` for IPv6)."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self._by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            url = settings.get(scheme) or settings.get("all")
            if url:
                self._by_scheme[scheme] = Proxy.parse(url, scheme)
        no = settings.get("no", "").strip()
        self._everything = no == "*"
        self._names: list[tuple[str, str]] = []  # (domain, port or "")
        self._networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        for raw in no.split(","):
            entry = raw.strip().lower()
            if entry.startswith("["):  # [v6] or [v6]:port
                host, _, rest = entry[1:].partition("]")
                port = rest.removeprefix(":")
            elif entry.count(":") == 1:
                host, _, port = entry.partition(":")
            else:
                host, port = entry, ""
            host = host.strip(".")
            if not host:
                continue
            try:
                self._networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                self._names.append((host, port))

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._by_scheme.get(scheme)
        if proxy is None or self._everything or self._bypassed(host.lower(), str(port)):
            return None
        return proxy

    def _bypassed(self, host: str, port: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(
                (host == name or host.endswith(f".{name}")) and only in ("", port)
                for name, only in self._names
            )
        return any(address in network and only in ("", port) for network, only in self._networks)
