from __future__ import annotations

from typing import Any

from sqlalchemy import String, text
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin


class Tenant(IdMixin, TimestampMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    # Tenant-wide limits over all of its keys, stored like a key's (see api.auth.limits).
    limits: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )
