"""A forward proxy on loopback, as an operator's egress proxy: it tunnels `CONNECT` and passes
absolute-form requests on, and records what it was asked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class FakeProxy:
    """A forward proxy on loopback: tunnels `CONNECT`, passes absolute-form requests on."""

    refuse: bytes | None = None  # an answer to CONNECT other than 200
    port: int = 0
    lines: list[str] = field(default_factory=list)  # each request line it was sent
    authorizations: list[str | None] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head.decode("latin-1").split("\r\n")
            self.lines.append(line)
            found = [
                v
                for n, _, v in (f.partition(": ") for f in fields)
                if n.lower() == "proxy-authorization"
            ]
            self.authorizations.append(found[0] if found else None)
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                if self.refuse is not None:
                    writer.write(self.refuse)
                    return
                host, _, port = target.rpartition(":")
                upstream = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                upstream = await asyncio.open_connection(parts.hostname, parts.port)
                upstream[1].write(head)
            await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def fake_proxy(**kwargs: Any) -> AsyncIterator[FakeProxy]:
    proxy = FakeProxy(**kwargs)
    server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
