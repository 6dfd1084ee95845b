from __future__ import annotations

from typing import Any, Literal

from tollgate.types.shared import TollgateModel


class Response(TollgateModel):
    """A stored Responses API response, in OpenAI's shape (every field of it is kept: see
    `model_extra`, or use `client.openai().responses.retrieve()` for OpenAI's own types)."""

    id: str
    object: Literal["response"]
    created_at: float
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    previous_response_id: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def output_text(self) -> str:
        """The text of every `output_text` part of the output's messages, joined."""
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content") or []
            if isinstance(part, dict) and part.get("type") == "output_text"
        )


class ResponseItem(TollgateModel):
    """An input item of a stored response (a message, a function call or its output, …)."""

    id: str | None = None
    type: str = "message"  # OpenAI's easy input messages may leave it out
    role: str | None = None
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        """A message's text: its `content` string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content or [])


class ResponseDeleted(TollgateModel):
    id: str
    object: Literal["response"]
    deleted: bool


class Conversation(TollgateModel):
    """A Conversations API conversation: its items are what a Responses request with
    `conversation=` continues from."""

    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, Any] | None = None


class ConversationDeleted(TollgateModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: bool


class ConversationItemList(TollgateModel):
    """The items `conversations.items.create` added, with their ids."""

    object: Literal["list"]
    data: list[ResponseItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
