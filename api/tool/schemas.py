"""Request and response models for `/v1/tools` (SPEC §5.5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# What every provider accepts as a function name (OpenAI's rule is the strictest).
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
DEFAULT_TIMEOUT_MS = 30_000


class ToolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ToolName
    description: Annotated[str, StringConstraints(max_length=4096)] = ""
    input_schema: dict[str, Any]
    webhook_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, ge=100, le=300_000)


class ToolRead(BaseModel):
    object: Literal["tool"] = "tool"
    id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    webhook_url: str
    timeout_ms: int
    signing_secret: str | None = None  # only in the answer that created or rotated it
    created_at: datetime
    updated_at: datetime
