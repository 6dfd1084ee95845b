from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

ProviderName = Literal["openai", "anthropic", "gemini", "deepseek"]


class ProviderPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=500)]
    base_url: Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://")] | None = None
    enabled: bool = True


class ProviderRead(BaseModel):
    """A tenant's own provider key as shown: never the secret, only its last four characters."""

    object: Literal["provider"] = "provider"
    name: str
    enabled: bool
    key_last4: str
    base_url: str | None
    validated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ProviderList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ProviderRead]
    has_more: bool = False
    next_cursor: str | None = None


class ProviderDeleted(BaseModel):
    object: Literal["provider"] = "provider"
    name: str
    deleted: bool = True
