"""`client.conversations`: the Conversations API (a conversation's metadata and items), read and
changed with the key that made it or the tenant's master key. A Responses request with
`conversation=` continues one: `client.openai(api_key=…).responses.create(…)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.response import (
    Conversation,
    ConversationDeleted,
    ConversationItemList,
    ResponseItem,
)

_PATH = "/v1/conversations"
Items = Sequence[Mapping[str, Any]]


def _path(conversation_id: str, *rest: str) -> str:
    return "/".join([_PATH, segment(conversation_id), *map(segment, rest)])


def _create(items: Items | NotGiven, metadata: Mapping[str, str] | NotGiven | None) -> Call:
    body = given(
        items=[dict(item) for item in items] if not isinstance(items, NotGiven) else items,
        metadata=dict(metadata) if isinstance(metadata, Mapping) else metadata,
    )
    # Tollgate does not deduplicate it: never repeated once it may have arrived.
    return Call("POST", _PATH, json=body, idempotent=False)


def _update(conversation_id: str, metadata: Mapping[str, str] | None) -> Call:
    body = {"metadata": dict(metadata) if metadata is not None else None}
    return Call("POST", _path(conversation_id), json=body)


def _add(conversation_id: str, items: Items) -> Call:
    body = {"items": [dict(item) for item in items]}
    return Call("POST", _path(conversation_id, "items"), json=body, idempotent=False)


def _list(
    conversation_id: str,
    limit: int | NotGiven,
    order: Literal["asc", "desc"] | NotGiven,
    after: str | NotGiven,
) -> Call:
    params = given(limit=limit, order=order, after=after)
    return Call("GET", _path(conversation_id, "items"), params=params, cursor_param="after")


class ConversationItems(SyncResource):
    def create(self, conversation_id: str, *, items: Items) -> ConversationItemList:
        """Append items (messages, function calls and outputs, …) to the conversation."""
        return self._one(_add(conversation_id, items), ConversationItemList)

    def list(
        self,
        conversation_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
        after: str | NotGiven = NOT_GIVEN,
    ) -> SyncPage[ResponseItem]:
        """The conversation's items, newest first (`order="asc"`: oldest first)."""
        return self._page(_list(conversation_id, limit, order, after), ResponseItem)

    def retrieve(self, conversation_id: str, item_id: str) -> ResponseItem:
        return self._one(Call("GET", _path(conversation_id, "items", item_id)), ResponseItem)

    def delete(self, conversation_id: str, item_id: str) -> Conversation:
        """Remove one item; returns the conversation."""
        return self._one(Call("DELETE", _path(conversation_id, "items", item_id)), Conversation)


class AsyncConversationItems(AsyncResource):
    async def create(self, conversation_id: str, *, items: Items) -> ConversationItemList:
        """Append items to the conversation."""
        return await self._one(_add(conversation_id, items), ConversationItemList)

    def list(
        self,
        conversation_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
        after: str | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[ResponseItem]:
        """The conversation's items, newest first."""
        return self._page(_list(conversation_id, limit, order, after), ResponseItem)

    async def retrieve(self, conversation_id: str, item_id: str) -> ResponseItem:
        call = Call("GET", _path(conversation_id, "items", item_id))
        return await self._one(call, ResponseItem)

    async def delete(self, conversation_id: str, item_id: str) -> Conversation:
        """Remove one item; returns the conversation."""
        call = Call("DELETE", _path(conversation_id, "items", item_id))
        return await self._one(call, Conversation)


class Conversations(SyncResource):
    @cached_property
    def items(self) -> ConversationItems:
        return ConversationItems(self._http)

    def create(
        self,
        *,
        items: Items | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
    ) -> Conversation:
        """A conversation owned by this client's key, optionally with its first items."""
        return self._one(_create(items, metadata), Conversation)

    def retrieve(self, conversation_id: str) -> Conversation:
        return self._one(Call("GET", _path(conversation_id)), Conversation)

    def update(self, conversation_id: str, *, metadata: Mapping[str, str] | None) -> Conversation:
        """Replace the conversation's metadata."""
        return self._one(_update(conversation_id, metadata), Conversation)

    def delete(self, conversation_id: str) -> ConversationDeleted:
        return self._one(Call("DELETE", _path(conversation_id)), ConversationDeleted)


class AsyncConversations(AsyncResource):
    @cached_property
    def items(self) -> AsyncConversationItems:
        return AsyncConversationItems(self._http)

    async def create(
        self,
        *,
        items: Items | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven | None = NOT_GIVEN,
    ) -> Conversation:
        """A conversation owned by this client's key, optionally with its first items."""
        return await self._one(_create(items, metadata), Conversation)

    async def retrieve(self, conversation_id: str) -> Conversation:
        return await self._one(Call("GET", _path(conversation_id)), Conversation)

    async def update(
        self, conversation_id: str, *, metadata: Mapping[str, str] | None
    ) -> Conversation:
        """Replace the conversation's metadata."""
        return await self._one(_update(conversation_id, metadata), Conversation)

    async def delete(self, conversation_id: str) -> ConversationDeleted:
        return await self._one(Call("DELETE", _path(conversation_id)), ConversationDeleted)
