"""The retention sweep: stored responses past `response_retention_days` are deleted (reads
already ignore them), a batch at a time, every ten minutes."""

from __future__ import annotations

from typing import Any

from api.background import Task
from api.db import session_scope
from api.kit.time import utcnow
from api.response.repository import expire_unscoped

EXPIRE = "response.expire"


async def expire(ctx: dict[str, Any]) -> int:
    deleted = 0
    while True:
        async with session_scope(ctx["sessionmaker"]) as session:
            batch = await expire_unscoped(session, utcnow())
        deleted += batch
        if batch == 0:
            return deleted


TASKS = [Task(EXPIRE, expire, timeout_seconds=600, max_tries=1, every_seconds=600)]
