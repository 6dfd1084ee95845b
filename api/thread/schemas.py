"""Request and response models for `/v1/threads` (SPEC §5.4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.tool.schemas import ToolName

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]
DEFAULT_MAX_TOOL_ROUNDS = 8


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: Annotated[str, StringConstraints(max_length=200_000)] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=50)


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    # A string, or Anthropic-style blocks: {"type":"text","text"} and {"type":"image","source"}.
    content: Annotated[str, StringConstraints(min_length=1)] | list[dict[str, Any]]
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[ToolName] | None = Field(default=None, max_length=64)
    max_tool_rounds: int = Field(default=DEFAULT_MAX_TOOL_ROUNDS, ge=0, le=32)
    stream: bool = False


class ThreadRead(BaseModel):
    object: Literal["thread"] = "thread"
    id: str
    key_id: str
    system: str | None
    metadata: dict[str, Any]
    message_count: int
    # Every message of the thread is in the search index (SPEC §5.6): false for a few seconds
    # after a turn, or while the vector store is down.
    indexed: bool
    created_at: datetime
    updated_at: datetime


class MessageUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_micros: int
    cost_usd: float


class MessageRead(BaseModel):
    object: Literal["thread.message"] = "thread.message"
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
    request_id: str | None = None
    created_at: datetime
