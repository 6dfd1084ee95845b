"""Webhook tools (SPEC §5.5), registered by a tenant's master key and named by thread turns."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin


class Tool(IdMixin, TimestampMixin, Base):
    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_tools_tenant_id_name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    webhook_url: Mapped[str] = mapped_column(String(2048))
    timeout_ms: Mapped[int] = mapped_column(Integer)
    # The signing secret, sealed with api.kit.crypto.SecretBox: the worker signs with it.
    signing_secret: Mapped[str] = mapped_column(Text)
