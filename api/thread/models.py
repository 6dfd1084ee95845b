"""Conversation threads (SPEC §5.4): a thread belongs to the key that created it; its messages
are numbered by `seq`, which is handed out under the thread row's lock, so history is ordered.

A turn is the user's message and everything the model and the tools added in answer (assistant
messages with tool calls, tool results, the final assistant message); they share `turn_id`, the
user message's id, and are trimmed from the history as a whole.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin, UTCDateTime
from api.kit.time import utcnow


class Thread(IdMixin, TimestampMixin, Base):
    __tablename__ = "threads"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    system: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    message_count: Mapped[int] = mapped_column(Integer, default=0)


class ThreadMessage(IdMixin, Base):
    __tablename__ = "thread_messages"
    __table_args__ = (
        UniqueConstraint("thread_id", "seq", name="uq_thread_messages_thread_id_seq"),
        # NULLs are distinct on both databases: only keyed turns are deduplicated.
        UniqueConstraint(
            "thread_id", "idempotency_key", name="uq_thread_messages_thread_id_idempotency_key"
        ),
        # What search has yet to index, oldest first (api/search/repository.py).
        Index(
            "ix_thread_messages_unindexed",
            "created_at",
            postgresql_where=text("indexed_at IS NULL"),
            sqlite_where=text("indexed_at IS NULL"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    thread_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    turn_id: Mapped[uuid.UUID] = mapped_column()
    role: Mapped[str] = mapped_column(String(16))  # "user" | "assistant" | "tool"
    # Anthropic-style blocks: text, image, thinking, tool_use, tool_result.
    content: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # On the keyed message only: sha256 (hex) of the request the key was first used with, so a
    # retry with another body is refused rather than replayed. NULL on rows from before it.
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When its vector was written (or found unneeded: no text); NULL until then (SPEC §5.6).
    indexed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
