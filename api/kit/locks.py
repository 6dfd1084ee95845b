"""Named mutual exclusion across processes (a Redis lock) or within one (the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import LockError

from api.errors import Conflict

logger = logging.getLogger("tollgate.locks")


class Locks(Protocol):
    def hold(
        self, name: str, *, ttl_seconds: float, wait_seconds: float
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


class LocalLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, *, ttl_seconds: float, wait_seconds: float
    ) -> AsyncIterator[None]:
        del ttl_seconds  # held until released: the process's end releases everything
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            try:
                await asyncio.wait_for(lock.acquire(), wait_seconds)
            except TimeoutError:
                raise Conflict("Another request holds this resource; try again.") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[name]
            if users <= 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class RedisLocks:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @contextlib.asynccontextmanager
    async def hold(
        self, name: str, *, ttl_seconds: float, wait_seconds: float
    ) -> AsyncIterator[None]:
        lock = self._redis.lock(
            f"lock:{name}", timeout=ttl_seconds, sleep=0.02, blocking_timeout=wait_seconds
        )
        if not await lock.acquire():
            raise Conflict("Another request holds this resource; try again.")
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:  # expired and maybe taken over: not ours to release any more
                logger.warning("the lock %s expired before it was released", name)
