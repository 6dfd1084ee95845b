"""A per-process cache of authenticated keys for the proxy's hot path.

Looking a key up costs a database round trip per request; the cache answers from memory.
Any change to a key (patch, revoke, rotate, suspend) drops it everywhere: locally at once, and
in other API processes through a Redis pub/sub message. Entries also expire after
`ttl_seconds`, which bounds staleness if a message is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from api.auth.models import ApiKey

logger = logging.getLogger("tollgate.auth")

CHANNEL = "tollgate:key-changed"
_MISS_TTL_SECONDS = 5.0
_EVERYTHING = "*"


@dataclass(frozen=True, slots=True)
class CachedKey:
    key: ApiKey
    secret_expires_at: datetime | None
    tenant_limits: tuple[dict[str, Any], ...]
    deadline: float


class KeyCache:
    def __init__(self, redis: Redis | None, ttl_seconds: float = 10.0, max_entries: int = 50_000):
        self._redis = redis
        self._ttl = ttl_seconds
        self._max = max_entries
        self._by_hash: dict[str, CachedKey] = {}
        self._hashes_by_key: dict[uuid.UUID, set[str]] = {}
        # Secrets that matched nothing, briefly: a stream of bad keys must not become a stream
        # of database queries.
        self._misses: dict[str, float] = {}
        # Bumped by every drop: a lookup that raced a change must not cache what it read.
        self.generation = 0
        self._listener: asyncio.Task[None] | None = None

    def get(self, secret_hash: str) -> CachedKey | None:
        entry = self._by_hash.get(secret_hash)
        if entry is not None and entry.deadline < time.monotonic():
            self._drop_hash(secret_hash)
            return None
        return entry

    def is_known_miss(self, secret_hash: str) -> bool:
        deadline = self._misses.get(secret_hash)
        return deadline is not None and deadline >= time.monotonic()

    def put_miss(self, secret_hash: str) -> None:
        if len(self._misses) >= self._max:
            self._misses.clear()
        self._misses[secret_hash] = time.monotonic() + _MISS_TTL_SECONDS

    def put(
        self,
        secret_hash: str,
        key: ApiKey,
        secret_expires_at: datetime | None,
        tenant_limits: Sequence[dict[str, Any]],
        generation: int,
    ) -> None:
        """Cache a lookup, unless a key changed since `generation` was read before it."""
        if generation != self.generation:
            return
        if len(self._by_hash) >= self._max:
            self._by_hash.clear()
            self._hashes_by_key.clear()
        deadline = time.monotonic() + self._ttl
        self._by_hash[secret_hash] = CachedKey(
            key, secret_expires_at, tuple(tenant_limits), deadline
        )
        self._hashes_by_key.setdefault(key.id, set()).add(secret_hash)

    def drop(self, key_id: uuid.UUID) -> None:
        self.generation += 1
        for secret_hash in self._hashes_by_key.pop(key_id, set()):
            self._by_hash.pop(secret_hash, None)

    def drop_all(self) -> None:
        self.generation += 1
        self._by_hash.clear()
        self._hashes_by_key.clear()

    def _drop_hash(self, secret_hash: str) -> None:
        entry = self._by_hash.pop(secret_hash, None)
        if entry is not None:
            self._hashes_by_key.get(entry.key.id, set()).discard(secret_hash)

    async def key_changed(self, key_id: uuid.UUID) -> None:
        """Forget a key here and in every other process."""
        self.drop(key_id)
        await self._broadcast(str(key_id))

    async def tenant_changed(self) -> None:
        """Something every key of a tenant carries changed (its limits): forget all keys.
        Tenant-wide changes are rare, so clearing everything is simpler than an index."""
        self.drop_all()
        await self._broadcast(_EVERYTHING)

    async def _broadcast(self, message: str) -> None:
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, message)
            except Exception:  # entries elsewhere still expire within the TTL
                logger.exception("could not broadcast a key change (%s)", message)

    def start(self) -> None:
        if self._redis is not None:
            self._listener = asyncio.create_task(self._listen(self._redis), name="key-cache")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self, redis: Redis) -> None:
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"].decode()
                        if data == _EVERYTHING:
                            self.drop_all()
                        else:
                            self.drop(uuid.UUID(data))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("key-change listener failed; clearing the cache and retrying")
                self.drop_all()
                await asyncio.sleep(1)
