"""Server-sent events of a streamed thread turn, as typed events.

A turn streams each model call as Anthropic's Messages events (`message_start` …
`message_stop`), each tool result as `thread.tool_result`, and ends with
`thread.message.completed`, which carries the stored answer. An `error` event (the turn failed
after it started: a cap reached between tool rounds, a provider gone) raises `APIStreamError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from tollgate._errors import APIError, APIStreamError
from tollgate.types.thread import (
    EVENT_TYPES,
    ContentBlockDeltaEvent,
    Message,
    MessageCompletedEvent,
    StreamEvent,
    ThreadStreamEvent,
)


@dataclass
class _SSEDecoder:
    """Lines in, (event name, data) out; comments and `id:`/`retry:` lines are ignored."""

    event: str | None = None
    data: list[str] | None = None

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if not line:
            if self.data is None:
                self.event = None
                return None
            out = (self.event, "\n".join(self.data))
            self.event, self.data = None, None
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data = [*(self.data or []), value]
        return None


def _event(name: str | None, data: str, request: httpx.Request) -> ThreadStreamEvent:
    try:
        body: Any = json.loads(data)
    except ValueError:
        raise APIError(f"Malformed event in the stream: {data[:200]!r}", request=request) from None
    kind = body.get("type") if isinstance(body, dict) else None
    kind = kind if isinstance(kind, str) else name
    if kind == "error":
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise APIStreamError(message or "The stream failed.", request=request, body=body)
    cls = EVENT_TYPES.get(kind or "", StreamEvent)
    return cls.model_validate({**body, "type": kind})


def _text(events: Iterable[ThreadStreamEvent]) -> Iterator[str]:
    for event in events:
        if isinstance(event, ContentBlockDeltaEvent) and event.delta.text:
            yield event.delta.text


class ThreadStream:
    """A streamed turn: iterate it for typed events, or call `get_final_message()`.

    Use it as a context manager (or iterate it to the end) so its connection is released.
    """

    def __init__(self, response: httpx.Response, closer: AbstractContextManager[Any]) -> None:
        self.response = response
        self._closer = closer
        self._iterator = self._events()
        self._final: Message | None = None
        self._closed = False

    def _events(self) -> Iterator[ThreadStreamEvent]:
        decoder = _SSEDecoder()
        try:
            for line in self.response.iter_lines():
                decoded = decoder.feed(line)
                if decoded is None:
                    continue
                event = _event(*decoded, self.response.request)
                if isinstance(event, MessageCompletedEvent):
                    self._final = event.message
                yield event
        finally:
            self.close()

    def __iter__(self) -> Iterator[ThreadStreamEvent]:
        return self._iterator

    def __next__(self) -> ThreadStreamEvent:
        return next(self._iterator)

    def text_deltas(self) -> Iterator[str]:
        """The answer's text as it arrives (every model call of the turn)."""
        return _text(self._iterator)

    def get_final_message(self) -> Message:
        """Reads the rest of the stream; the stored answer."""
        for _ in self._iterator:
            pass
        if self._final is None:
            raise APIError(
                "The stream ended without thread.message.completed.", request=self.response.request
            )
        return self._final

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._closer.__exit__(None, None, None)

    def __enter__(self) -> ThreadStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncThreadStream:
    """`ThreadStream`'s async twin: `async for event in stream`, `await get_final_message()`."""

    def __init__(self, response: httpx.Response, closer: AbstractAsyncContextManager[Any]) -> None:
        self.response = response
        self._closer = closer
        self._iterator = self._events()
        self._final: Message | None = None
        self._closed = False

    async def _events(self) -> AsyncIterator[ThreadStreamEvent]:
        decoder = _SSEDecoder()
        try:
            async for line in self.response.aiter_lines():
                decoded = decoder.feed(line)
                if decoded is None:
                    continue
                event = _event(*decoded, self.response.request)
                if isinstance(event, MessageCompletedEvent):
                    self._final = event.message
                yield event
        finally:
            await self.close()

    def __aiter__(self) -> AsyncIterator[ThreadStreamEvent]:
        return self._iterator

    async def __anext__(self) -> ThreadStreamEvent:
        return await anext(self._iterator)

    async def text_deltas(self) -> AsyncIterator[str]:
        async for event in self._iterator:
            if isinstance(event, ContentBlockDeltaEvent) and event.delta.text:
                yield event.delta.text

    async def get_final_message(self) -> Message:
        async for _ in self._iterator:
            pass
        if self._final is None:
            raise APIError(
                "The stream ended without thread.message.completed.", request=self.response.request
            )
        return self._final

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._closer.__aexit__(None, None, None)

    async def __aenter__(self) -> AsyncThreadStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
