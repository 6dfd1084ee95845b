"""Counters shared by every API process: Redis in production, a dict in the embedded default.

A counter exists once it is *seeded* (its starting value, e.g. the spend already in the
ledger). Adding to a counter that does not exist does nothing: whatever was added is in the
ledger, and the seed will count it. Counters expire so finished periods do not pile up.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

_SEED_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return redis.call('GET', KEYS[1])
"""
# Add ARGV[2i-1] to KEYS[i] when it exists, and keep it ARGV[2i] seconds more: one round trip.
_ADD_SCRIPT = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, ARGV[2 * i - 1])
    redis.call('EXPIRE', key, ARGV[2 * i])
  end
end
"""


class CounterStore(Protocol):
    async def read(self, names: list[str]) -> list[int | None]:
        """Current values; None for a counter not seeded (or expired)."""
        ...

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        """Create the counter at `amount` unless it exists; return its value."""
        ...

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None: ...

    async def delete(self, names: list[str]) -> None: ...


class MemoryCounterStore:
    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}  # name → (value, monotonic deadline)

    def _get(self, name: str, now: float) -> int | None:
        entry = self._values.get(name)
        if entry is None:
            return None
        if entry[1] < now:
            del self._values[name]
            return None
        return entry[0]

    async def read(self, names: list[str]) -> list[int | None]:
        now = time.monotonic()
        return [self._get(name, now) for name in names]

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        now = time.monotonic()
        current = self._get(name, now)
        if current is not None:
            return current
        self._values[name] = (amount, now + ttl_seconds)
        return amount

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None:
        now = time.monotonic()
        for name, amount in increments.items():
            current = self._get(name, now)
            if current is not None:
                self._values[name] = (current + amount, now + ttl_seconds[name])

    async def delete(self, names: list[str]) -> None:
        for name in names:
            self._values.pop(name, None)


class RedisCounterStore:
    def __init__(self, redis: Redis, prefix: str = "tollgate:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._seed = redis.register_script(_SEED_SCRIPT)
        self._add = redis.register_script(_ADD_SCRIPT)

    async def read(self, names: list[str]) -> list[int | None]:
        values = await self._redis.mget([self._prefix + name for name in names])
        return [None if value is None else int(value) for value in values]

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        value = await self._seed(keys=[self._prefix + name], args=[amount, ttl_seconds])
        return int(value)

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None:
        keys = [self._prefix + name for name in increments]
        args = [v for name, amount in increments.items() for v in (amount, ttl_seconds[name])]
        await self._add(keys=keys, args=args)

    async def delete(self, names: list[str]) -> None:
        await self._redis.delete(*[self._prefix + name for name in names])
