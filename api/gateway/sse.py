"""Incremental server-sent-events parsing (LF or CRLF framing, comments, multi-line data)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: bytes
    event: bytes | None = None


async def parse_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Yield each event as soon as its terminating blank line arrives."""
    data: list[bytes] = []
    event: bytes | None = None
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield SSEEvent(b"\n".join(data), event)
            data, event = [], None
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        # ":" comments (keep-alives) and unknown fields are ignored, as the SSE spec says.
    if data:
        yield SSEEvent(b"\n".join(data), event)
