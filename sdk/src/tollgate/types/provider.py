from __future__ import annotations

from datetime import datetime
from typing import Literal

from tollgate.types.shared import TollgateModel

ProviderName = Literal["openai", "anthropic", "gemini", "deepseek"]


class Provider(TollgateModel):
    """A tenant's own provider key (BYOK), as shown: never the key, its last four only."""

    object: Literal["provider"]
    name: str
    enabled: bool
    key_last4: str
    base_url: str | None = None
    validated_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class ProviderDeleted(TollgateModel):
    object: Literal["provider"]
    name: str
    deleted: bool
