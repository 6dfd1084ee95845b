"""API keys and their secrets.

A key (id, name, limits, history) outlives its secrets: rotation adds a new `KeySecret` row and
gives the old one an expiry, so a grace period needs no special case at lookup time. Secrets are
never stored, only a peppered hash plus the prefix and last four characters for display.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, JSONType, TimestampMixin, UTCDateTime
from api.kit.time import utcnow

KeyStatus = Literal["active", "revoked", "expired", "suspended"]


class ApiKey(IdMixin, TimestampMixin, Base):
    __tablename__ = "api_keys"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))  # "master" | "standard"
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    prefix: Mapped[str] = mapped_column(String(32))
    last_four: Mapped[str] = mapped_column(String(4))
    # [{"metric", "period", "max"}]; "max" in base units: micro-USD for spend_usd, else a count.
    limits: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    allowed_providers: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def status_at(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.suspended_at is not None:
            return "suspended"
        return "active"


class KeySecret(IdMixin, Base):
    __tablename__ = "key_secrets"

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # None while the secret is current; set by rotation (now, or now + grace_seconds).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
