"""Request traces: the steps of one proxied request and its upstream attempts, kept for
`trace_retention_days` (docs/decisions/0008-request-traces.md)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UTCDateTime
from api.kit.time import utcnow


class RequestTrace(Base):
    __tablename__ = "request_traces"
    __table_args__ = (
        Index("ix_request_traces_tenant_id_trace_id", "tenant_id", "trace_id"),
        Index("ix_request_traces_created_at", "created_at"),
    )

    # The id of the usage event it was written with: a replayed write inserts nothing.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    # The client's `x-trace-id`, else the request id; unique only within a tenant.
    trace_id: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    steps: Mapped[str] = mapped_column(Text)  # JSON: [{name, start_ms, duration_ms, …}]
    attempts: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON, every attempt
