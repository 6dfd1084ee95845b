"""Incremental server-sent-events parsing (LF or CRLF framing, comments, multi-line data).

It reads whatever bytes arrived (not line by line: one await per network read, not two per
event) and yields each event as soon as its terminating blank line is in. Events that arrived
in one read are marked (`more`), so a relay can write them to its client in one write: each
goes out the moment it could, with one send per read instead of one per event.

An event still waiting for its blank line is held as the reads that brought it, each searched
once for the delimiter, and no more than `max_event_bytes` of it: an upstream that never ends a
line gets `SSETooLarge`, not the gateway's memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

# How much of one event is held while its blank line has not come. An image model's picture
# comes as one event of a few MB (Gemini's `inlineData`, OpenAI's `partial_image_b64`).
MAX_EVENT_BYTES = 8 * 1024 * 1024


class SSETooLarge(ValueError):
    """An event (or one line of it) ran past `max_event_bytes` without ending."""


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


def _lf(chunk: bytes, cr: bool) -> tuple[bytes, bool]:
    """`chunk` with CRLF line ends made LF, and whether it ended in a CR whose LF may open the
    next read (held back until then)."""
    if cr:
        chunk = b"\r" + chunk
    cr = chunk.endswith(b"\r")
    if cr:
        chunk = chunk[:-1]
    return chunk.replace(b"\r\n", b"\n"), cr


def _events(blocks: list[bytes]) -> list[SSEEvent]:
    events = [event for block in blocks if (event := _parse_block(block)) is not None]
    for event in events[:-1]:
        event.more = True
    return events


async def parse_sse(
    chunks: AsyncIterable[bytes], max_event_bytes: int = MAX_EVENT_BYTES
) -> AsyncIterator[SSEEvent]:
    pending: list[bytes] = []  # reads with no blank line in them: the start of an event
    held = 0  # their length
    cr = False
    async for chunk in chunks:
        if cr or b"\r" in chunk:
            chunk, cr = _lf(chunk, cr)
        events: list[SSEEvent] = []
        if b"\n\n" in chunk or (pending and chunk[:1] == b"\n" and pending[-1][-1:] == b"\n"):
            if pending:
                chunk = b"".join(pending) + chunk
                pending.clear()
                held = 0
            *blocks, chunk = chunk.split(b"\n\n")
            events = _events(blocks)
        if chunk:
            pending.append(chunk)
            held += len(chunk)
            if held > max_event_bytes:
                raise SSETooLarge(f"An event ran past {max_event_bytes} bytes unended.")
        for event in events:
            yield event
    last = _parse_block(b"".join(pending).strip(b"\n"))
    if last is not None:
        yield last
