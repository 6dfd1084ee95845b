from __future__ import annotations

from typing import Any

from api.alert.service import AlertNotifier


async def resend_alerts(ctx: dict[str, Any]) -> int:
    """Cron, every minute: another attempt for each budget alert not delivered yet."""
    notifier: AlertNotifier = ctx["alerts"]
    return await notifier.resend_undelivered()
