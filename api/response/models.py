"""Stored Responses (OpenAI's `store: true`, the default): a response Tollgate made, with its
input and output items, owned by the key that made it, for `previous_response_id`,
`item_reference` inputs, `GET /v1/responses/{id}` and its `input_items`.

Kept in Tollgate's database for every model, so a tenant's conversations live in one place:
OpenAI itself is sent `store: false`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, UTCDateTime
from api.kit.time import utcnow


class StoredResponse(IdMixin, Base):
    __tablename__ = "stored_responses"
    __table_args__ = (
        UniqueConstraint("tenant_id", "response_id", name="uq_stored_responses_tenant_response"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    response_id: Mapped[str] = mapped_column(String(128))  # the `id` the client sees
    previous_response_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the response object as returned
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ResponseItem(IdMixin, Base):
    """One input or output item of a stored response, addressable by its `item_id`."""

    __tablename__ = "response_items"
    __table_args__ = (
        Index("ix_response_items_tenant_item", "tenant_id", "item_id"),
        Index("ix_response_items_response_position", "response_pk", "position"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    response_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("stored_responses.id", ondelete="CASCADE")
    )
    item_id: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)  # inputs first, then outputs, in order
    output: Mapped[bool] = mapped_column(default=False)
    item: Mapped[dict[str, Any]] = mapped_column(JSONType)


class Conversation(IdMixin, Base):
    """OpenAI's Conversations API: a list of Responses items that responses naming it read and
    add to. Its own list of items, not a thread: see docs/decisions/0005."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("tenant_id", "conversation_id", name="uq_conversations_tenant_conv"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[str] = mapped_column(String(128))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    next_position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class ConversationItem(IdMixin, Base):
    __tablename__ = "conversation_items"
    __table_args__ = (
        Index("ix_conversation_items_conv_position", "conversation_pk", "position"),
        Index("ix_conversation_items_tenant_item", "tenant_id", "item_id"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    conversation_pk: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    item_id: Mapped[str] = mapped_column(String(128))
    position: Mapped[int] = mapped_column(Integer)
    item: Mapped[dict[str, Any]] = mapped_column(JSONType)
