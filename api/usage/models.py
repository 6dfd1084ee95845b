"""The usage ledger: one append-only row per proxied request (SPEC §7)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, UTCDateTime
from api.kit.time import utcnow


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_key_id_created_at", "key_id", "created_at"),
        Index("ix_usage_events_tenant_id_created_at", "tenant_id", "created_at"),
    )

    # The event id is chosen by the writer, so a replayed write is a no-op (idempotent).
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Per-unit use (SPEC §5.12): seconds of audio transcribed, characters spoken, images made.
    audio_seconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    characters: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    images: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # A response cache hit (1, else 0; `cache`: "exact" or "semantic"), the tokens it did not
    # send upstream and what they would have cost.
    cache: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    saved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    saved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    tool_calls: Mapped[int] = mapped_column(Integer, default=0)
    # True when Tollgate counted the tokens (a stream cut off before the provider reported usage).
    estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Upstream attempts (retries and failovers included), the account that answered, the
    # "provider/model" a cross-provider failover came from, and the attempts as JSON.
    attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    account: Mapped[str | None] = mapped_column(String(100), nullable=True)
    failover_from: Mapped[str | None] = mapped_column(String(240), nullable=True)
    trace: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class _Sums:
    """What every rollup row sums over its events."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)  # status ≥ 400
    reached: Mapped[int] = mapped_column(BigInteger, default=0)  # counted by `requests` limits
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    audio_seconds: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    characters: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    images: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_hits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    saved_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    saved_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageRollup(_Sums, Base):
    """The request log summed per key, model and UTC hour (`span` "h"), day ("d") or month ("m").

    Usage reports, spend and the caps' starting counts read these instead of scanning the log
    (SPEC §8: usage queries over 10 million rows in ≤ 100 ms): a query's whole months, days and
    hours come from these rows, only its ragged edges from the log (`api/usage/rollups.py`).
    They are kept in the transaction that inserts the events they sum,
    counting only the events that insert actually added, so a replayed write changes nothing.
    """

    __tablename__ = "usage_rollups"
    __table_args__ = (
        Index("ix_usage_rollups_tenant_id_span_bucket", "tenant_id", "span", "bucket"),
    )

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    span: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))


class UsageKeyRollup(_Sums, Base):
    """`UsageRollup` without the model: what a key used in each hour, day and month. A
    tenant's report by key reads one row per key and piece, not one per key, model and piece."""

    __tablename__ = "usage_key_rollups"
    __table_args__ = (
        Index("ix_usage_key_rollups_tenant_id_span_bucket", "tenant_id", "span", "bucket"),
    )

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    span: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))


class UsageTenantRollup(_Sums, Base):
    """The request log summed per tenant, model and UTC hour, day or month: `UsageRollup`
    without the key, for what a tenant asks about all its keys at once (its usage by model or
    by day, its tenant-wide caps). A thousand keys' rows per day become one per model."""

    __tablename__ = "usage_tenant_rollups"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    span: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
