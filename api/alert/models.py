"""Budget alerts: one row per (limit, period, threshold) reached, which is what makes each fire
exactly once (SPEC §7)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from api.db import Base, IdMixin, UTCDateTime
from api.kit.time import utcnow

# None is SQL NULL (not JSON null), so `email_recipients IS NULL` means "no email to send".
_RECIPIENTS = JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)


class Alert(IdMixin, Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "scope", "owner_id", "metric", "period_tag", "threshold",
            name="uq_alerts_once_per_limit_period_threshold",
        ),
    )  # fmt: skip

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(8))  # "key" | "tenant"
    owner_id: Mapped[uuid.UUID] = mapped_column()  # the key's id, or the tenant's
    metric: Mapped[str] = mapped_column(String(16))
    period: Mapped[str] = mapped_column(String(8))
    period_tag: Mapped[str] = mapped_column(String(16))  # which day/month: "d20261122", "m202611"
    threshold: Mapped[int] = mapped_column(Integer)  # percent: 50, 80, 100
    max: Mapped[int] = mapped_column(BigInteger)  # base units: micro-USD for spend_usd
    used: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The email channel, beside the webhook's three fields above: the tenant's `alerts.emails`
    # when the alert fired (None: no email to send), and how its delivery went.
    email_recipients: Mapped[list[str] | None] = mapped_column(_RECIPIENTS, nullable=True)
    email_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    email_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    email_last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
