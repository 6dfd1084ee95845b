"""The SSE parser's bound on an unended event, and its searching each byte a fixed number of
times however long the event."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from api.gateway.sse import SSEEvent, SSETooLarge, parse_sse


class Scanned(bytes):
    """A read that counts how many bytes were searched in it for the event delimiter."""

    searched = 0

    def __contains__(self, part: object) -> bool:
        Scanned.searched += len(self)
        return super().__contains__(part)  # type: ignore[operator]


async def _reads(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class TestSSELimits:
    async def test_a_line_that_never_ends_stops_at_the_limit(self):
        async def endless() -> AsyncIterator[bytes]:
            yield b"data: "
            while True:
                yield b"x" * 65536

        with pytest.raises(SSETooLarge, match="1048576"):
            async for _ in parse_sse(endless(), max_event_bytes=1024 * 1024):
                pass

    async def test_an_event_within_the_limit_arrives_whole_from_many_reads(self):
        data = b"y" * 900_000
        pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
        reads = _reads(b"data: ", *pieces, b"\n", b"\ndata: [DONE]\n\n")
        events = [e async for e in parse_sse(reads, max_event_bytes=1024 * 1024)]
        assert events == [SSEEvent(data), SSEEvent(b"[DONE]")]

    async def test_the_limit_counts_what_is_held_not_what_went_by(self):
        event = b"data: " + b"z" * 1000 + b"\n\n"
        events = [e async for e in parse_sse(_reads(*[event] * 3000), max_event_bytes=4096)]
        assert len(events) == 3000

    async def test_the_rest_of_a_read_counts_towards_the_limit(self):
        reads = _reads(b"data: 1\n\ndata: " + b"w" * 5000)
        with pytest.raises(SSETooLarge):
            async for _ in parse_sse(reads, max_event_bytes=4096):
                pass

    async def test_each_read_is_searched_once_not_the_whole_event_each_time(self):
        Scanned.searched = 0
        pieces = [Scanned(b"a" * 1000) for _ in range(500)]  # one 500 KB line in 500 reads
        reads = _reads(Scanned(b"data: "), *pieces, Scanned(b"\n\n"))
        events = [e async for e in parse_sse(reads)]
        assert events == [SSEEvent(b"a" * 500_000)]
        # Once for a CR, once for the blank line: not the ~250 MB of searching the whole event
        # again after each read.
        assert Scanned.searched == 2 * (6 + 500_000 + 2)

    async def test_a_crlf_split_between_reads_still_ends_the_event(self):
        reads = _reads(b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n")
        assert [e.data async for e in parse_sse(reads)] == [b"1", b"2"]
