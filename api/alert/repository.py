from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.alert.models import Alert
from api.kit.repository import TenantRepository


class AlertRepository(TenantRepository[Alert]):
    model = Alert


async def undelivered_unscoped(
    session: AsyncSession, *, created_after: datetime, created_before: datetime, max_attempts: int
) -> list[uuid.UUID]:
    """Alerts of every tenant still waiting for a successful delivery (the resend sweep)."""
    rows = await session.scalars(
        select(Alert.id)
        .where(
            Alert.delivered_at.is_(None),
            Alert.attempts < max_attempts,
            Alert.created_at >= created_after,
            Alert.created_at <= created_before,
        )
        .order_by(Alert.created_at)
        .limit(500)
    )
    return list(rows)
