"""The retention sweep: request traces older than `trace_retention_days`, and request-log rows
older than `log_retention_days` when it is set, are deleted a batch of ids at a time (each
batch its own short transaction: the hot tables are never locked for long). Usage rollups,
which reports and caps read, are left as they are."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from api.background import Task
from api.db import session_scope
from api.kit.time import utcnow
from api.settings import Settings
from api.trace.models import RequestTrace
from api.trace.repository import expire_unscoped
from api.usage.models import UsageEvent

EXPIRE = "trace.expire"


async def _sweep(ctx: dict[str, Any], model: Any, days: int) -> int:
    before = utcnow() - timedelta(days=days)
    deleted = 0
    while True:
        async with session_scope(ctx["sessionmaker"]) as session:
            batch = await expire_unscoped(session, before, model)
        deleted += batch
        if batch == 0:
            return deleted


async def expire(ctx: dict[str, Any]) -> int:
    settings: Settings = ctx["settings"]
    deleted = await _sweep(ctx, RequestTrace, settings.trace_retention_days)
    if settings.log_retention_days is not None:
        deleted += await _sweep(ctx, UsageEvent, settings.log_retention_days)
    return deleted


TASKS = [Task(EXPIRE, expire, timeout_seconds=600, max_tries=1, every_seconds=600)]
