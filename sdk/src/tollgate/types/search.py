from __future__ import annotations

from datetime import datetime
from typing import Literal

from tollgate.types.shared import TollgateModel


class SearchHit(TollgateModel):
    message_id: str
    thread_id: str
    role: Literal["user", "assistant", "tool"]
    text: str
    score: float
    """Cosine similarity, higher is closer."""
    created_at: datetime


class SearchResults(TollgateModel):
    object: Literal["list"]
    data: list[SearchHit]
