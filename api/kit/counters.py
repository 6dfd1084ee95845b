"""Counters shared by every API process: Redis in production, a dict in the embedded default.

A counter can be *seeded* once (its starting value, e.g. spend already in the ledger) and is
*added to* at any time; adding before seeding is fine, the seed is added on top. Both stores
expire counters so finished periods do not pile up.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

# Seed a counter once: the flag says whether it happened, the amount goes on top of any adds.
_SEED_SCRIPT = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[1])
"""
# Add ARGV[2i-1] to KEYS[i] and let it live ARGV[2i] seconds: one round trip for all counters.
_ADD_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 * i - 1])
  redis.call('EXPIRE', key, ARGV[2 * i])
end
"""


class CounterStore(Protocol):
    async def read(self, names: list[str]) -> list[int | None]:
        """Current values; None for a counter never seeded."""
        ...

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int: ...

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None: ...

    async def delete(self, names: list[str]) -> None:
        """Forget counters; the next read finds them unseeded."""
        ...


class MemoryCounterStore:
    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._expiry: dict[str, float] = {}  # name → monotonic deadline, as Redis's EXPIRE
        self._seeded: set[str] = set()

    def _expire(self, now: float) -> None:
        for name in [n for n, deadline in self._expiry.items() if deadline < now]:
            self._values.pop(name, None)
            self._expiry.pop(name, None)
            self._seeded.discard(name)

    async def read(self, names: list[str]) -> list[int | None]:
        self._expire(time.monotonic())
        return [self._values.get(name, 0) if name in self._seeded else None for name in names]

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        if name not in self._seeded:
            self._seeded.add(name)
            self._values[name] = self._values.get(name, 0) + amount
            self._expiry[name] = time.monotonic() + ttl_seconds
        return self._values[name]

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None:
        now = time.monotonic()
        for name, amount in increments.items():
            self._values[name] = self._values.get(name, 0) + amount
            self._expiry[name] = now + ttl_seconds[name]

    async def delete(self, names: list[str]) -> None:
        for name in names:
            self._values.pop(name, None)
            self._expiry.pop(name, None)
            self._seeded.discard(name)


class RedisCounterStore:
    def __init__(self, redis: Redis, prefix: str = "tollgate:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._seed = redis.register_script(_SEED_SCRIPT)
        self._add = redis.register_script(_ADD_SCRIPT)

    async def read(self, names: list[str]) -> list[int | None]:
        keys = [self._prefix + n for n in names] + [self._prefix + n + ":seeded" for n in names]
        values = await self._redis.mget(keys)
        count = len(names)
        return [
            int(values[i] or 0) if values[count + i] is not None else None for i in range(count)
        ]

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        key = self._prefix + name
        value = await self._seed(keys=[key, key + ":seeded"], args=[amount, ttl_seconds])
        return int(value or 0)

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None:
        keys = [self._prefix + name for name in increments]
        args = [v for name, amount in increments.items() for v in (amount, ttl_seconds[name])]
        await self._add(keys=keys, args=args)

    async def delete(self, names: list[str]) -> None:
        keys = [self._prefix + n + suffix for n in names for suffix in ("", ":seeded")]
        await self._redis.delete(*keys)
