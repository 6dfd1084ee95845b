from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from tollgate.types.shared import TollgateModel


class Thread(TollgateModel):
    object: Literal["thread"]
    id: str
    key_id: str
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    message_count: int
    indexed: bool
    """Every message is searchable: false for a few seconds after a turn."""
    created_at: datetime
    updated_at: datetime


class MessageUsage(TollgateModel):
    input_tokens: int
    output_tokens: int
    cost_micros: int
    cost_usd: float


class Message(TollgateModel):
    """A stored message: the user's turn, the assistant's answer (with `tool_use` blocks), or
    the `tool` results Tollgate fed back. `content` is a list of Anthropic-style blocks."""

    object: Literal["thread.message"]
    id: str
    thread_id: str
    turn_id: str
    seq: int
    role: Literal["user", "assistant", "tool"]
    content: list[dict[str, Any]]
    model: str | None = None
    provider: str | None = None
    stop_reason: str | None = None
    usage: MessageUsage | None = None
    """An assistant message's model call. On the answer `messages.create` returns (and the
    stream's final event), the whole turn's: every model call of its tool loop."""
    request_id: str | None = None
    created_at: datetime

    @property
    def text(self) -> str:
        """The text blocks of `content`, joined."""
        return "".join(
            block["text"]
            for block in self.content
            if block.get("type") == "text" and isinstance(block.get("text"), str)
        )


class StreamEvent(TollgateModel):
    """An event of a streamed turn; the classes below are its known kinds."""

    type: str


class MessageStartEvent(StreamEvent):
    type: Literal["message_start"]
    message: dict[str, Any]


class ContentBlockStartEvent(StreamEvent):
    type: Literal["content_block_start"]
    index: int
    content_block: dict[str, Any]


class Delta(TollgateModel):
    type: str
    """`text_delta`, `input_json_delta` or `thinking_delta` (Anthropic's)."""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None


class ContentBlockDeltaEvent(StreamEvent):
    type: Literal["content_block_delta"]
    index: int
    delta: Delta


class ContentBlockStopEvent(StreamEvent):
    type: Literal["content_block_stop"]
    index: int


class MessageDeltaEvent(StreamEvent):
    type: Literal["message_delta"]
    delta: dict[str, Any]
    usage: dict[str, Any] | None = None


class MessageStopEvent(StreamEvent):
    type: Literal["message_stop"]


class ToolResultEvent(StreamEvent):
    """A registered tool's answer, between the model calls of a turn."""

    type: Literal["thread.tool_result"]
    tool_use_id: str
    name: str | None = None
    content: Any = None
    is_error: bool = False
    attempts: int | None = None
    latency_ms: int | None = None


class MessageCompletedEvent(StreamEvent):
    """The last event: the stored answer, as `messages.create` would have returned it."""

    type: Literal["thread.message.completed"]
    message: Message


ThreadStreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | ToolResultEvent
    | MessageCompletedEvent
    | StreamEvent
)

EVENT_TYPES: dict[str, type[StreamEvent]] = {
    "message_start": MessageStartEvent,
    "content_block_start": ContentBlockStartEvent,
    "content_block_delta": ContentBlockDeltaEvent,
    "content_block_stop": ContentBlockStopEvent,
    "message_delta": MessageDeltaEvent,
    "message_stop": MessageStopEvent,
    "thread.tool_result": ToolResultEvent,
    "thread.message.completed": MessageCompletedEvent,
}
