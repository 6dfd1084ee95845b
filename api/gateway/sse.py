"""Incremental server-sent-events parsing (LF or CRLF framing, comments, multi-line data).

It reads whatever bytes arrived (not line by line: one await per network read, not two per
event) and yields each event as soon as its terminating blank line is in. Events that arrived
in one read are marked (`more`), so a relay can write them to its client in one write: each
goes out the moment it could, with one send per read instead of one per event.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, once per event
class SSEEvent:
    data: bytes
    event: bytes | None = None
    # The event as it came (LF line ends), for relaying it unchanged without framing it again.
    raw: bytes = field(default=b"", compare=False, repr=False)
    # More events that arrived in the same read follow this one (nothing waits on the network
    # between them): a relay may hold this one's bytes until the last of them.
    more: bool = field(default=False, compare=False, repr=False)


def frame(event: SSEEvent) -> bytes:
    """`event` framed for relaying: as it came where it came whole, else rebuilt."""
    if event.raw:
        return event.raw + b"\n\n"
    head = b"event: " + event.event + b"\n" if event.event else b""
    lines = event.data.split(b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def _parse_block(block: bytes) -> SSEEvent | None:
    if block.startswith(b"data: ") and b"\n" not in block:  # the common one-line event
        return SSEEvent(block[6:], None, block)
    if block.startswith(b"event: "):  # Anthropic's: one event line, one data line
        end = block.find(b"\n")
        if end > 0 and block.startswith(b"data: ", end + 1) and block.find(b"\n", end + 1) < 0:
            return SSEEvent(block[end + 7 :], block[7:end].strip(), block)
    data: list[bytes] = []
    event: bytes | None = None
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        # ":" comments (keep-alives) and unknown fields are ignored, as the SSE spec says.
    return SSEEvent(b"\n".join(data), event, block) if data else None


async def parse_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        if b"\n\n" not in buffer:
            continue
        *blocks, buffer = buffer.split(b"\n\n")
        events = [event for block in blocks if (event := _parse_block(block)) is not None]
        for event in events[:-1]:
            event.more = True
        for event in events:
            yield event
    event = _parse_block(buffer.strip(b"\n"))
    if event is not None:
        yield event
