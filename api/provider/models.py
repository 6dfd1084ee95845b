"""Tenants' own provider keys (BYOK, SPEC §5.9): one per tenant and provider, sealed at rest."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, TimestampMixin, UTCDateTime


class ProviderCredential(IdMixin, TimestampMixin, Base):
    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("tenant_id", "provider"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    # Sealed with api.kit.crypto.SecretBox (a key derived from TOLLGATE_SECRET_KEY).
    api_key: Mapped[str] = mapped_column(Text)
    key_last4: Mapped[str] = mapped_column(String(8))
    base_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    validated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
