"""Counters shared by every API process: Redis in production, a dict in the embedded default.

A counter exists once it is *seeded* (its starting value, e.g. the spend already in the
ledger). Adding to a counter that does not exist does nothing: whatever was added is in the
ledger, and the seed will count it. Counters expire so finished periods do not pile up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from api.kit.resp import PipelinedRedis, Script

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


# --- Holds: amounts reserved against a counter's maximum until the request settles ----------
#
# Each counter `name` has a companion sorted set `name:holds` of "<hold id>:<amount>" members
# scored by their expiry (ms). Room = max - counter - live holds. A hold of a process that
# crashed simply expires.

_RESERVE_SCRIPT = """
local now, expiry, hold, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local count = #KEYS
local rooms = {}
local fits = true
for i = 1, count do
  local used = redis.call('GET', KEYS[i])
  if not used then return {-1, i} end
  local holds = KEYS[i] .. ':holds'
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  local held = 0
  for _, member in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
    held = held + tonumber(string.match(member, ':(%d+)$'))
  end
  local room = tonumber(ARGV[3 + 2 * i]) - tonumber(used) - held
  rooms[i] = room
  if tonumber(ARGV[4 + 2 * i]) > room then fits = false end
end
if not fits then return {0, unpack(rooms)} end
for i = 1, count do
  local holds = KEYS[i] .. ':holds'
  redis.call('ZADD', holds, expiry, hold .. ':' .. ARGV[4 + 2 * i])
  redis.call('EXPIRE', holds, ttl)
end
return {1, unpack(rooms)}
"""
# A lease: one process's share of the room, held as one member "<lease id>:<amount>" like a
# hold, so that process can admit requests against it without asking Redis each time
# (`api/gateway/budget.py`). Renewing replaces the process's previous member of each counter
# (ARGV "old") with a new one carrying what is still in flight under it ("carry"), plus this
# request's amount, plus `chunk` more while at least four chunks of room are left after the
# request in every counter. Nearer the cap, the request gets a hold of its own instead (member
# "<hold id>:<amount>", as `_RESERVE_SCRIPT` makes), released with its settlement in one step:
# room another process leased and left idle is never more than a quarter of what was left,
# and near the cap no room is counted twice. (A request admitted under a lease that settles
# while its process renews is carried into the new member too: counted twice, never
# overrun, until the next renewal.) When the request does not fit, only the carry is held
# again.
# ARGV: now, expiry, lease id, ttl, hold id; then per counter, from 6 + 5(i-1): max, amount,
# carry, chunk, old member.
# Returns {fits, room of each counter less its carry..., amount granted to each..., 1 when
# the request is held under the lease, 0 when it has holds of its own}.
_LEASE_SCRIPT = """
local now, expiry, lease, ttl, hold = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local count = #KEYS
local used = {}
for i = 1, count do
  used[i] = redis.call('GET', KEYS[i])
  if not used[i] then
    if tonumber(ARGV[5 * i + 2]) > 0 then return {-1, i} end
    used[i] = 0  -- only giving back: no starting value needed
  end
end
local out = {1}
for i = 1, count do
  local base = 5 * i + 1
  local holds = KEYS[i] .. ':holds'
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  if ARGV[base + 4] ~= '' then redis.call('ZREM', holds, ARGV[base + 4]) end
  local held = 0
  for _, member in ipairs(redis.call('ZRANGE', holds, 0, -1)) do
    held = held + tonumber(string.match(member, ':(%d+)$'))
  end
  local room = tonumber(ARGV[base]) - tonumber(used[i]) - held - tonumber(ARGV[base + 2])
  out[i + 1] = room
  if tonumber(ARGV[base + 1]) > room then out[1] = 0 end
end
local spare = out[1] == 1
for i = 1, count do
  local base = 5 * i + 1
  local amount = tonumber(ARGV[base + 1])
  if amount > 0 and out[i + 1] - amount < 4 * tonumber(ARGV[base + 3]) then spare = false end
end
for i = 1, count do
  local base = 5 * i + 1
  local amount, granted = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local holds = KEYS[i] .. ':holds'
  if out[1] == 1 and amount > 0 then
    if spare then
      granted = granted + amount + tonumber(ARGV[base + 3])
    else
      redis.call('ZADD', holds, expiry, hold .. ':' .. amount)
      redis.call('EXPIRE', holds, ttl)
    end
  end
  out[count + 1 + i] = granted
  if granted > 0 then
    redis.call('ZADD', holds, expiry, lease .. ':' .. granted)
    redis.call('EXPIRE', holds, ttl)
  end
end
out[2 * count + 2] = spare and 1 or 0
return out
"""
# ARGV[1] = how many counters; the optional last key is a stream that gets ARGV's last value
# appended in the same step (the usage ledger: counters and ledger move together or not at all).
_RELEASE_SCRIPT = """
local count = tonumber(ARGV[1])
local after = {}
for i = 1, count do
  local key = KEYS[i]
  redis.call('ZREM', key .. ':holds', ARGV[3 * i - 1])
  after[i] = -1
  if redis.call('EXISTS', key) == 1 then
    after[i] = redis.call('INCRBY', key, ARGV[3 * i])
    redis.call('EXPIRE', key, ARGV[3 * i + 1])
  end
end
if #KEYS > count then
  redis.call('XADD', KEYS[count + 1], '*', 'e', ARGV[3 * count + 2])
end
return after
"""


class Unseeded(Exception):
    """The counter at this index has no starting value yet: seed it and ask again."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(frozen=True, slots=True)
class HoldRequest:
    counter: str
    maximum: int
    amount: int


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    counter: str
    maximum: int
    amount: int  # this request's worst case (0: only renewing or giving back)
    carry: int  # still in flight under the old member, held again
    chunk: int  # spare room wanted beyond the request
    old: str  # the process's previous member of this counter ("" none)


@dataclass(frozen=True, slots=True)
class Leased:
    fits: bool
    rooms: list[int]  # each counter's room for this request (carries held)
    granted: list[int]  # each new member's amount (0: none)
    under_lease: bool  # the request is held under the new members (else: holds of its own)


@dataclass(frozen=True, slots=True)
class Settlement:
    counter: str
    member: str  # "<hold id>:<amount held>"
    actual: int
    ttl_seconds: int


class CounterStore(Protocol):
    async def read(self, names: list[str]) -> list[int | None]:
        """Current values; None for a counter not seeded (or expired)."""
        ...

    async def seed(self, name: str, amount: int, ttl_seconds: int) -> int:
        """Create the counter at `amount` unless it exists; return its value."""
        ...

    async def add(self, increments: dict[str, int], ttl_seconds: dict[str, int]) -> None: ...

    async def delete(self, names: list[str]) -> None: ...

    async def reserve(
        self, hold_id: str, requests: list[HoldRequest], expiry_ms: int, ttl_seconds: int
    ) -> tuple[bool, list[int]]:
        """Hold every amount or none; returns whether it held, and each counter's room before.

        Raises `Unseeded` for a counter without a starting value.
        """
        ...

    async def release(self, settlements: list[Settlement]) -> list[int | None]:
        """Drop holds, add what was actually used; returns each counter's new value."""
        ...

    async def extend(self, members: list[tuple[str, str]], expiry_ms: int) -> None:
        """Move the expiry of these (counter, member) holds to `expiry_ms`, where they are
        still held (one that expired or was settled meanwhile stays gone)."""
        ...


class MemoryCounterStore:
    """The embedded default's store: one process, so the event loop makes each call atomic."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[int, float]] = {}  # name → (value, monotonic deadline)
        self._holds: dict[str, dict[str, tuple[int, int]]] = {}  # name → member → (amount, ms)

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

    async def reserve(
        self, hold_id: str, requests: list[HoldRequest], expiry_ms: int, ttl_seconds: int
    ) -> tuple[bool, list[int]]:
        del ttl_seconds  # holds here expire by their own deadline; nothing to garbage-collect
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        rooms = []
        for index, request in enumerate(requests):
            used = self._get(request.counter, now)
            if used is None:
                raise Unseeded(index)
            holds = self._holds.setdefault(request.counter, {})
            for member in [m for m, (_, until) in holds.items() if until <= now_ms]:
                del holds[member]
            rooms.append(request.maximum - used - sum(amount for amount, _ in holds.values()))
        if any(r.amount > room for r, room in zip(requests, rooms, strict=True)):
            return False, rooms
        for request in requests:
            member = f"{hold_id}:{request.amount}"
            self._holds[request.counter][member] = (request.amount, expiry_ms)
        return True, rooms

    async def release(self, settlements: list[Settlement]) -> list[int | None]:
        now = time.monotonic()
        after: list[int | None] = []
        for item in settlements:
            self._holds.get(item.counter, {}).pop(item.member, None)
            current = self._get(item.counter, now)
            if current is None:
                after.append(None)
                continue
            self._values[item.counter] = (current + item.actual, now + item.ttl_seconds)
            after.append(current + item.actual)
        return after

    async def extend(self, members: list[tuple[str, str]], expiry_ms: int) -> None:
        for counter, member in members:
            holds = self._holds.get(counter, {})
            if member in holds:
                holds[member] = (holds[member][0], expiry_ms)


class RedisCounterStore:
    """`fast`, when given, runs the two per-request scripts (reserve, release) over one
    pipelined connection (`api/kit/resp.py`); everything else goes through redis-py."""

    def __init__(
        self, redis: Redis, prefix: str = "tollgate:", fast: PipelinedRedis | None = None
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._seed = redis.register_script(_SEED_SCRIPT)
        self._add = redis.register_script(_ADD_SCRIPT)
        self._reserve: Any = redis.register_script(_RESERVE_SCRIPT)
        self._release: Any = redis.register_script(_RELEASE_SCRIPT)
        self._lease: Any = redis.register_script(_LEASE_SCRIPT)
        if fast is not None:
            self._reserve = Script(fast, _RESERVE_SCRIPT)
            self._release = Script(fast, _RELEASE_SCRIPT)
            self._lease = Script(fast, _LEASE_SCRIPT)

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

    async def forget_all(self, patterns: tuple[str, ...]) -> int:
        """Delete every counter (not its holds) matching the patterns; returns how many."""
        deleted = 0
        for pattern in patterns:
            batch: list[bytes] = []
            async for name in self._redis.scan_iter(match=self._prefix + pattern, count=1000):
                if not name.endswith(b":holds"):
                    batch.append(name)
                if len(batch) >= 1000:
                    deleted += await self._redis.delete(*batch)
                    batch = []
            if batch:
                deleted += await self._redis.delete(*batch)
        return deleted

    async def reserve(
        self, hold_id: str, requests: list[HoldRequest], expiry_ms: int, ttl_seconds: int
    ) -> tuple[bool, list[int]]:
        args: list[int | str] = [int(time.time() * 1000), expiry_ms, hold_id, ttl_seconds]
        for request in requests:
            args += [request.maximum, request.amount]
        keys = [self._prefix + request.counter for request in requests]
        result = [int(v) for v in await self._reserve(keys=keys, args=args)]
        if result[0] == -1:
            raise Unseeded(result[1] - 1)
        return result[0] == 1, result[1:]

    async def lease(
        self,
        lease_id: str,
        requests: list[LeaseRequest],
        expiry_ms: int,
        ttl_seconds: int,
        hold_id: str = "",
    ) -> Leased:
        """Replace this process's leases of the counters, atomically (see `_LEASE_SCRIPT`);
        near a cap the request is held as `hold_id` instead.

        Raises `Unseeded` (having changed nothing) for a counter without a starting value."""
        args: list[int | str] = [
            int(time.time() * 1000), expiry_ms, lease_id, ttl_seconds, hold_id,
        ]  # fmt: skip
        for item in requests:
            args += [item.maximum, item.amount, item.carry, item.chunk, item.old]
        keys = [self._prefix + item.counter for item in requests]
        result = [int(v) for v in await self._lease(keys=keys, args=args)]
        if result[0] == -1:
            raise Unseeded(result[1] - 1)
        count = len(requests)
        return Leased(
            result[0] == 1, result[1 : count + 1], result[count + 1 : 2 * count + 1],
            result[2 * count + 1] == 1,
        )  # fmt: skip

    async def extend(self, members: list[tuple[str, str]], expiry_ms: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for counter, member in members:  # XX: never brings back a hold that is gone
            pipe.zadd(f"{self._prefix}{counter}:holds", {member: expiry_ms}, xx=True)
        await pipe.execute()

    async def release(
        self, settlements: list[Settlement], journal: tuple[str, bytes] | None = None
    ) -> list[int | None]:
        """`journal`: (stream, entry) to append atomically with the settlements."""
        keys = [self._prefix + item.counter for item in settlements]
        args: list[int | str | bytes] = [len(settlements)]
        args += [v for i in settlements for v in (i.member, i.actual, i.ttl_seconds)]
        if journal is not None:
            keys.append(journal[0])
            args.append(journal[1])
        values = await self._release(keys=keys, args=args)
        return [None if int(v) < 0 else int(v) for v in values]
