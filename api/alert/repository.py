from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.alert.models import Alert
from api.kit.repository import TenantRepository


class AlertRepository(TenantRepository[Alert]):
    model = Alert


async def undelivered_unscoped(
    session: AsyncSession, *, created_after: datetime, created_before: datetime, max_attempts: int
) -> list[uuid.UUID]:
    """Alerts of every tenant still waiting for a successful delivery on a channel (the resend
    sweep): the webhook, or the email when the alert has recipients."""
    rows = await session.scalars(
        select(Alert.id)
        .where(
            or_(
                (Alert.delivered_at.is_(None)) & (Alert.attempts < max_attempts),
                Alert.email_recipients.is_not(None)
                & Alert.email_delivered_at.is_(None)
                & (Alert.email_attempts < max_attempts),
            ),
            Alert.created_at >= created_after,
            Alert.created_at <= created_before,
        )
        .order_by(Alert.created_at)
        .limit(500)
    )
    return list(rows)


async def claim_email_attempt_unscoped(
    session: AsyncSession, alert_id: uuid.UUID, attempts: int
) -> bool:
    """Count one more email attempt, if nobody else has since `attempts` was read: of two
    processes about to mail the same alert, one goes ahead."""
    result = await session.execute(
        update(Alert)
        .where(
            Alert.id == alert_id,
            Alert.email_attempts == attempts,
            Alert.email_delivered_at.is_(None),
        )
        .values(email_attempts=attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
