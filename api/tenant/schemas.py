from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class TenantRead(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: str
    name: str
    created_at: datetime
    master_key: str | None = None
