"""Client connections that cannot hold the server hostage: uvicorn's HTTP protocol with the
timeouts it lacks (`tollgate serve` uses it; SPEC §8, issue "slow and hostile clients").

uvicorn closes a keep-alive connection 5 s after a response, but a connection that never
sends a request, one that trickles its headers a byte at a time (slowloris), one that trickles
its body, and one that never reads the response it asked for are all kept open for ever. Each
holds a file descriptor and memory; the last also holds an upstream stream and the request's
budget hold. Here, as nginx does with `client_header_timeout`, `client_body_timeout` and
`send_timeout`:

- **Headers**: a connection's request line and headers must arrive within `header_timeout`
  of its opening (or of its previous response): else it is closed, with `408` when part of a
  request came.
- **Body**: while the app waits for it, the body may pause at most `body_timeout` between two
  reads: else the connection is closed, and the app sees the client leave. A body the app is
  not reading yet (flow control paused it) is not timed.
- **Response**: a response the client stops reading (the write buffer stays full) for
  `write_timeout` is cut off: the connection is aborted, and the app sees the client leave (a
  stream that was cut is billed from the provider's own usage, as when a client hangs up).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nThe request came too slowly.\n"
)


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    write_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._partial = False  # part of a request head came

    @classmethod
    def with_limits(cls, header: float, body: float, write: float) -> type[GuardedProtocol]:
        return type(
            "GuardedProtocol",
            (cls,),
            {"header_timeout": header, "body_timeout": body, "write_timeout": write},
        )

    # Reading ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()

    def _await_request(self) -> None:
        self._partial = False
        self._arm_read(self.header_timeout, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._read_timer is not None and self.cycle is not None and self._reading_body():
            self._arm_read(self.body_timeout, self._body_too_slow)  # bytes came: a new gap
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._partial = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_read()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.more_body:
            self._arm_read(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._cancel_read()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_request()

    def _reading_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _head_too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._partial and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()

    def _body_too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or not self._reading_body():
            return
        if self.flow.read_paused:  # the app has not asked for more yet: not the client's doing
            self._arm_read(self.body_timeout, self._body_too_slow)
            return
        self.transport.close()

    def _arm_read(self, seconds: float, handler: Any) -> None:
        self._cancel_read()
        self._read_timer = self.loop.call_later(seconds, handler)

    def _cancel_read(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    # Writing ---------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._not_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _not_reading(self) -> None:
        self._write_timer = None
        self.transport.abort()  # what is buffered for it is dropped

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)
