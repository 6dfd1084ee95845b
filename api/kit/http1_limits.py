"""What `api/kit/http1.py` lets an upstream make it hold, and the line requests wait in for a
connection.

A tenant's own provider host (BYOK `base_url`) is an upstream nobody vetted, so every size an
answer can grow to is bounded: header count and bytes (1xx answers included), a body read
whole, a compressed body once inflated. Each bound breaks the answer with `HTTPClientError`
and closes its connection; none of them costs a well-behaved upstream anything measurable.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    # Python's http.client allows 100 headers; h11 (httpx) a head of 16 KiB. 1xx heads and
    # trailers count too.
    max_headers: int = 100
    max_header_bytes: int = 64 * KIB
    # `Response.read()`: a completion is KBs; a batch of embeddings a few MB.
    max_body_bytes: int = 64 * MIB
    # A compressed body, inflated (read whole or streamed): a few KB of gzip can inflate to GBs.
    max_decompressed_bytes: int = 64 * MIB


class SlotQueue:
    """Requests waiting for a connection, first come first served. `wake()` lets the first
    waiter go on (it looks again for an idle connection or room for a new one); a waiter that
    was woken and then cancelled passes its turn on, so no wake-up is lost."""

    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self, loop: asyncio.AbstractEventLoop, until: float | None) -> None:
        """Until woken; `TimeoutError` at `until` (on the loop's clock)."""
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_at(until, _time_out, waiter) if until is not None else None
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.wake()  # woken, then cancelled: the next in line goes on
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self._waiters:
            self.wake()

    def __bool__(self) -> bool:
        return bool(self._waiters)


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("No connection to the upstream came free in time."))
