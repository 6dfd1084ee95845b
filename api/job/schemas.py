"""Request and response models for `/v1/jobs` (SPEC §5.7)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.thread.schemas import MetadataKey, MetadataValue


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    body: dict[str, Any]
    webhook_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=50)


class JobUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_micros: int
    cost_usd: float


class JobRead(BaseModel):
    object: Literal["job"] = "job"
    id: str
    key_id: str
    endpoint: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    attempts: int
    status_code: int | None
    result: Any | None
    error: Any | None
    usage: JobUsage | None
    metadata: dict[str, str]
    webhook_url: str | None
    webhook_status: Literal["pending", "delivered", "failed"] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
