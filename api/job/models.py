"""Async jobs (SPEC §5.7): one model request (or thread turn) run later by a worker.

A job row is the source of truth; the queue only says when to look at it. `status` moves
queued → running → succeeded | failed, or queued → cancelled; a worker that dies mid-job leaves
it `running`, and the next attempt claims it again (`attempts` counts the claims).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin, UTCDateTime

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled",
)  # fmt: skip
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = (SUCCEEDED, FAILED, CANCELLED)


class Job(IdMixin, TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_updated_at", "status", "updated_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    endpoint: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The synchronous endpoint's answer: its status and JSON body (`result` on success, `error`
    # on failure, each exactly what the endpoint would have returned).
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    result: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The completion webhook: None (not asked for), "pending", "delivered" or "failed".
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
