"""A dashboard sign-in: one row per session, found by the hash of the cookie's token."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, UTCDateTime
from api.kit.time import utcnow


class DashboardSession(IdMixin, Base):
    __tablename__ = "dashboard_sessions"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the cookie
    # The peppered hash of the master secret that signed in: the session ends when that secret
    # does (rotated out, expired), as a request with the secret would be refused.
    secret_hash: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
