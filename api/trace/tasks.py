"""The retention sweep: request traces older than `trace_retention_days`, and request-log rows
older than `log_retention_days` when it is set, are deleted a batch of ids at a time (each
batch its own short transaction: the hot tables are never locked for long); a tenant that set
its own `retention` (`trace_days`, `log_days`) has its rows kept that long instead. Usage
rollups, which reports and caps read, are left as they are."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from api.background import Task
from api.db import session_scope
from api.kit.time import utcnow
from api.settings import Settings
from api.trace.models import RequestTrace
from api.trace.repository import expire_unscoped, retentions_unscoped
from api.usage.models import UsageEvent

EXPIRE = "trace.expire"


async def _sweep(ctx: dict[str, Any], model: Any, days: int, **whose: Any) -> int:
    before = utcnow() - timedelta(days=days)
    deleted = 0
    while True:
        async with session_scope(ctx["sessionmaker"]) as session:
            batch = await expire_unscoped(session, before, model, **whose)
        deleted += batch
        if batch == 0:
            return deleted


async def expire(ctx: dict[str, Any]) -> int:
    settings: Settings = ctx["settings"]
    async with session_scope(ctx["sessionmaker"]) as session:
        own = await retentions_unscoped(session)
    deleted = 0
    for model, field, default in (
        (RequestTrace, "trace_days", settings.trace_retention_days),
        (UsageEvent, "log_days", settings.log_retention_days),
    ):
        theirs = [(tenant, days) for tenant, kept in own if (days := kept.get(field))]
        for tenant, days in theirs:
            deleted += await _sweep(ctx, model, int(days), tenant_id=tenant)
        if default is not None:
            others = [tenant for tenant, _ in theirs]
            deleted += await _sweep(ctx, model, default, other_than=others)
    return deleted


TASKS = [Task(EXPIRE, expire, timeout_seconds=600, max_tries=1, every_seconds=600)]
