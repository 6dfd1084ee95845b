from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from tollgate.types.shared import TollgateModel

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class JobUsage(TollgateModel):
    input_tokens: int
    output_tokens: int
    cost_micros: int
    cost_usd: float


class Job(TollgateModel):
    object: Literal["job"]
    id: str
    key_id: str
    endpoint: str
    status: JobStatus
    attempts: int
    status_code: int | None = None
    """The status the synchronous call would have answered with, once the job ran."""
    result: Any = None
    """Exactly what the synchronous endpoint answers, once the job succeeded."""
    error: Any = None
    """The error body the synchronous call would have got, when the job failed."""
    usage: JobUsage | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    webhook_url: str | None = None
    webhook_status: Literal["pending", "delivered", "failed"] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES
