"""Request and response models for `POST /v1/search` (SPEC §5.6)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DEFAULT_LIMIT = 10
MAX_LIMIT = 50
MAX_QUERY_CHARS = 4096  # the model reads ~256 word pieces; more would be thrown away


class SearchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    thread_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    role: Literal["user", "assistant", "tool"] | None = None
    min_score: float | None = Field(default=None, ge=-1, le=1)  # cosine similarity
    start: datetime | None = None  # created_at, inclusive
    end: datetime | None = None

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class SearchHitRead(BaseModel):
    message_id: str
    thread_id: str
    role: Literal["user", "assistant", "tool"]
    text: str
    score: float
    created_at: datetime


class SearchListRead(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHitRead]
