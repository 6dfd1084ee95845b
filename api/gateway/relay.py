"""The proxy's responses: `EventStream` relays a stream to the client, one ASGI send per chunk;
`JSONBody` sends an answer already serialised (Starlette's `Response` rebuilds its headers
through a mutable mapping, which measured as much CPU as the send itself).

`EventStream`:

Starlette's StreamingResponse runs every stream inside an anyio task group that listens for
the client's disconnect; on the relay's hot path that measured a fifth of the CPU per chunk.
Here a single watcher task waits for the disconnect and cancels the relay: the body generator
then sees `CancelledError` at its current await (the upstream read), as it would under
Starlette, and meters what was produced.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

WARNING_HEADER = "X-Tollgate-Warning"
_UNSAFE_HEADER_CHARS = re.compile(r"[^\x20-\x7e]")


def warning_header(warnings: list[str]) -> dict[str, str]:
    """What the gateway changed or dropped, for the client to see, in printable ASCII (a
    client's field names can hold anything)."""
    said = "; ".join(warnings)
    return {WARNING_HEADER: _UNSAFE_HEADER_CHARS.sub("?", said)[:1000]} if said else {}


def _encoded(headers: Mapping[str, str] | None) -> list[tuple[bytes, bytes]]:
    """Header values that are not Latin-1 (never expected: every one is built to be ASCII)
    are sent with `?` in place of what cannot be encoded, rather than failing the answer."""
    return [
        (name.lower().encode("latin-1", "replace"), value.encode("latin-1", "replace"))
        for name, value in (headers or {}).items()
    ]


_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class JSONBody(Response):
    """A 200 answer of serialised JSON (or of `content_type`), with the call's extra headers."""

    def __init__(
        self,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.body = body
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", content_type.encode("latin-1", "replace")),
            (b"content-length", str(len(body)).encode()),
        ]
        if headers:
            self.raw_headers += _encoded(headers)


class EventStream(Response):
    """A `Response` only so FastAPI passes it through untouched; it never buffers a body.
    Events by default; any other body relayed as it arrives (speech) names its
    `content_type`."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.stream = body
        self.status_code = 200
        self.background = None
        self.raw_headers = _HEADERS + _encoded(headers)
        if content_type is not None:
            self.raw_headers[0] = (b"content-type", content_type.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        del scope  # nothing in it changes how a stream is relayed
        relay = asyncio.current_task()
        assert relay is not None
        streaming = True
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if streaming:  # not after the last byte: nothing left to stop
                gone = True
                relay.cancel()

        watcher = asyncio.create_task(watch())
        try:
            # The relay runs before the headers go out, so whatever ends this response finds
            # it started: an async generator closed before its first step runs none of its
            # handlers, and a stream its client left at once would go unmetered. (Its first
            # event is in already: `resilience` reads it before answering.)
            first = await anext(self.stream, b"")
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if first:
                await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in self.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            streaming = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            relay.uncancel()  # the client left: that ends this response, not the server's task
        finally:
            streaming = False
            watcher.cancel()
            await self.stream.aclose()
