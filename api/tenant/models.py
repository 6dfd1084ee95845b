from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin


class Tenant(IdMixin, TimestampMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    # Tenant-wide limits over all of its keys, stored like a key's (see api.auth.limits).
    limits: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
    # The settings groups of `PUT /v1/settings` other than limits, e.g. {"alerts": {...}}.
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, server_default=text("'{}'")
    )
    # The webhook signing secret, sealed with api.kit.crypto.SecretBox (it must be read back).
    webhook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
