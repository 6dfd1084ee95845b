"""What thread turns need at run time, built in the app's lifespan: the job queue for tool
calls (`api.background`) and the per-thread lock (Redis, or in-process without it)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.gateway.pipeline import Gateway
from api.kit.jobs import JobQueue
from api.kit.locks import LocalLocks, Locks, RedisLocks
from api.thread.turns import TurnContext


def turn_context(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis | None,
    gateway: Gateway,
    jobs: JobQueue,
    on_persisted: Callable[[uuid.UUID], Awaitable[None]] | None = None,
) -> TurnContext:
    """`on_persisted`: search's hook (`api.search.runtime.Search.turn_persisted`)."""
    locks: Locks = RedisLocks(redis) if redis is not None else LocalLocks()
    return TurnContext(gateway, sessionmaker, jobs, locks, on_persisted)
