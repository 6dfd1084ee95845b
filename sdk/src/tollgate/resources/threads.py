"""`client.threads`: conversations Tollgate keeps, and `client.threads.messages`: their turns.

Create threads with the end-user's key (`client.with_options(api_key=user_secret)`): a thread
belongs to the key that made it, which alone (and the tenant's master key) can read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._streaming import AsyncThreadStream, ThreadStream
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.shared import Deleted
from tollgate.types.thread import Message, Thread

_PATH = "/v1/threads"
Content = str | Sequence[Mapping[str, Any]]


def _create(system: str | NotGiven | None, metadata: Mapping[str, str] | NotGiven | None) -> Call:
    body = given(
        system=system, metadata=dict(metadata) if isinstance(metadata, Mapping) else metadata
    )
    # Tollgate does not deduplicate thread creation: never repeated once it may have arrived.
    return Call("POST", _PATH, json=body, idempotent=False)


def _list(limit: int | NotGiven, cursor: str | NotGiven, key_id: str | NotGiven) -> Call:
    return Call("GET", _PATH, params=given(limit=limit, cursor=cursor, key_id=key_id))


def _turn(
    thread_id: str,
    *,
    model: str,
    content: Content,
    max_tokens: int | NotGiven,
    temperature: float | NotGiven,
    tools: Sequence[str] | NotGiven,
    max_tool_rounds: int | NotGiven,
    idempotency_key: str | NotGiven,
    stream: bool,
) -> Call:
    body = {
        "model": model,
        "content": content if isinstance(content, str) else [dict(block) for block in content],
        **given(
            max_tokens=max_tokens,
            temperature=temperature,
            tools=list(tools) if isinstance(tools, Sequence) else tools,
            max_tool_rounds=max_tool_rounds,
        ),
    }
    if stream:
        body["stream"] = True
    path = f"{_PATH}/{segment(thread_id)}/messages"
    return Call("POST", path, json=body, idempotency_key=idempotency_key)


def _messages(
    thread_id: str,
    limit: int | NotGiven,
    cursor: str | NotGiven,
    order: Literal["asc", "desc"] | NotGiven,
) -> Call:
    path = f"{_PATH}/{segment(thread_id)}/messages"
    return Call("GET", path, params=given(limit=limit, cursor=cursor, order=order))


class Messages(SyncResource):
    def create(
        self,
        thread_id: str,
        *,
        model: str,
        content: Content,
        max_tokens: int | NotGiven = NOT_GIVEN,
        temperature: float | NotGiven = NOT_GIVEN,
        tools: Sequence[str] | NotGiven = NOT_GIVEN,
        max_tool_rounds: int | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Message:
        """Send the user's new turn; Tollgate adds the history, calls `model` (any provider),
        runs the registered `tools` the model calls, stores every message and returns the
        answer. A retry with the same `idempotency_key` returns the stored answer."""
        return self._one(
            _turn(
                thread_id, model=model, content=content, max_tokens=max_tokens,
                temperature=temperature, tools=tools, max_tool_rounds=max_tool_rounds,
                idempotency_key=idempotency_key, stream=False,
            ),
            Message,
        )  # fmt: skip

    def stream(
        self,
        thread_id: str,
        *,
        model: str,
        content: Content,
        max_tokens: int | NotGiven = NOT_GIVEN,
        temperature: float | NotGiven = NOT_GIVEN,
        tools: Sequence[str] | NotGiven = NOT_GIVEN,
        max_tool_rounds: int | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> ThreadStream:
        """`create`, streamed: typed events as they come, ending with
        `thread.message.completed` (`stream.get_final_message()`). Errors before the first
        event raise here; later ones raise `APIStreamError` while iterating."""
        call = _turn(
            thread_id, model=model, content=content, max_tokens=max_tokens,
            temperature=temperature, tools=tools, max_tool_rounds=max_tool_rounds,
            idempotency_key=idempotency_key, stream=True,
        )  # fmt: skip
        opened = self._http.stream(call)
        return ThreadStream(opened.__enter__(), opened)

    def list(
        self,
        thread_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
    ) -> SyncPage[Message]:
        """The stored messages, oldest first (`order="desc"`: newest first)."""
        return self._page(_messages(thread_id, limit, cursor, order), Message)


class AsyncMessages(AsyncResource):
    async def create(
        self,
        thread_id: str,
        *,
        model: str,
        content: Content,
        max_tokens: int | NotGiven = NOT_GIVEN,
        temperature: float | NotGiven = NOT_GIVEN,
        tools: Sequence[str] | NotGiven = NOT_GIVEN,
        max_tool_rounds: int | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Message:
        """Send the user's new turn; the stored answer."""
        return await self._one(
            _turn(
                thread_id, model=model, content=content, max_tokens=max_tokens,
                temperature=temperature, tools=tools, max_tool_rounds=max_tool_rounds,
                idempotency_key=idempotency_key, stream=False,
            ),
            Message,
        )  # fmt: skip

    async def stream(
        self,
        thread_id: str,
        *,
        model: str,
        content: Content,
        max_tokens: int | NotGiven = NOT_GIVEN,
        temperature: float | NotGiven = NOT_GIVEN,
        tools: Sequence[str] | NotGiven = NOT_GIVEN,
        max_tool_rounds: int | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> AsyncThreadStream:
        """`create`, streamed: `async for event in stream`, ending with the stored answer."""
        call = _turn(
            thread_id, model=model, content=content, max_tokens=max_tokens,
            temperature=temperature, tools=tools, max_tool_rounds=max_tool_rounds,
            idempotency_key=idempotency_key, stream=True,
        )  # fmt: skip
        opened = self._http.stream(call)
        return AsyncThreadStream(await opened.__aenter__(), opened)

    def list(
        self,
        thread_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[Message]:
        """The stored messages, oldest first (`order="desc"`: newest first)."""
        return self._page(_messages(thread_id, limit, cursor, order), Message)


class Threads(SyncResource):
    @cached_property
    def messages(self) -> Messages:
        return Messages(self._http)

    def create(
        self,
        *,
        system: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
    ) -> Thread:
        """A thread owned by this client's key, with an optional system prompt."""
        return self._one(_create(system, metadata), Thread)

    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
    ) -> SyncPage[Thread]:
        """Threads, newest first: a standard key's own, or (master key) the tenant's, or one
        key's with `key_id`."""
        return self._page(_list(limit, cursor, key_id), Thread)

    def retrieve(self, thread_id: str) -> Thread:
        return self._one(Call("GET", f"{_PATH}/{segment(thread_id)}"), Thread)

    def delete(self, thread_id: str) -> Deleted:
        """Delete a thread, its messages and their search vectors."""
        return self._one(Call("DELETE", f"{_PATH}/{segment(thread_id)}"), Deleted)


class AsyncThreads(AsyncResource):
    @cached_property
    def messages(self) -> AsyncMessages:
        return AsyncMessages(self._http)

    async def create(
        self,
        *,
        system: str | NotGiven | None = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
    ) -> Thread:
        """A thread owned by this client's key, with an optional system prompt."""
        return await self._one(_create(system, metadata), Thread)

    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[Thread]:
        """Threads, newest first."""
        return self._page(_list(limit, cursor, key_id), Thread)

    async def retrieve(self, thread_id: str) -> Thread:
        return await self._one(Call("GET", f"{_PATH}/{segment(thread_id)}"), Thread)

    async def delete(self, thread_id: str) -> Deleted:
        """Delete a thread, its messages and their search vectors."""
        return await self._one(Call("DELETE", f"{_PATH}/{segment(thread_id)}"), Deleted)
