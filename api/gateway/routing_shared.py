"""What routing state every API process shares through Redis (SPEC §5.9): cooldowns and
sticky sessions.

Each process keeps its own `Health` per account, and choosing reads only memory. The state that
changes which account a request goes to is shared, so three processes behind a round-robin load
balancer route as one would:

- **A cooldown** (a 429 or quota error with a reset time) is written to a hash and published.
  Every process applies it at once, and one that starts or reconnects reads those still running.
- **A session's sticky account** is kept under the session with a sliding expiry. A request that
  names a session reads it (one `GETEX`) when its provider has more than one account.

Success rates and latencies stay per process. Each is a sample of the same upstream, and
sharing every call's outcome would cost a Redis write per request. An account's own rpm/tpm
window is per process too (see docs/operations.md). When Redis is down, each process goes on
with what it knows; nothing is refused for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

logger = logging.getLogger("tollgate.gateway")

COOLDOWNS = "tollgate:cooldowns"  # hash: account name → when its cooldown ends (Unix seconds)
COOLDOWN_CHANNEL = "tollgate:account-cooled"  # "<until> <account name>"
_STICKY = "tollgate:sticky:"  # + session → account name
_MAX_PENDING = 1_000  # writes in flight; past it (Redis stalled) a write is skipped, not queued

Cooler = Callable[[str, float], None]  # (account name, wall-clock end of its cooldown)


class SharedRouting:
    def __init__(self, redis: Redis, apply: Cooler, sticky_seconds: float) -> None:
        self._redis = redis
        self._apply = apply
        self._sticky_seconds = max(1, round(sticky_seconds))
        self._pending: set[asyncio.Task[Any]] = set()

    # Cooldowns -------------------------------------------------------------------------------

    def cooled(self, name: str, seconds: float) -> None:
        """Tell every process that `name` cools down for `seconds` from now."""
        self._spawn(self._publish(name, time.time() + seconds))

    async def _publish(self, name: str, until: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(COOLDOWNS, name, f"{until:.3f}")
            pipe.publish(COOLDOWN_CHANNEL, f"{until:.3f} {name}")
            await pipe.execute()

    def heard(self, data: bytes) -> None:
        """A cooldown another process (or this one) published."""
        until, _, name = data.decode().partition(" ")
        self._apply(name, float(until))

    async def load(self) -> None:
        """Apply the cooldowns still running; drop the ended ones."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(COOLDOWNS)
            (running,) = await pipe.execute()
            now = time.time()
            ended = []
            for name, until in running.items():
                if float(until) > now:
                    self._apply(name.decode(), float(until))
                else:
                    ended.append(name)
            if ended:
                pipe.hdel(COOLDOWNS, *ended)
                await pipe.execute()

    # Sticky sessions -------------------------------------------------------------------------

    async def sticky(self, session: str) -> str | None:
        """The session's account, its expiry renewed; None when it has none (or Redis fails)."""
        try:
            name = await self._redis.getex(_STICKY + session, ex=self._sticky_seconds)
        except Exception:
            logger.debug("could not read session %s's account", session, exc_info=True)
            return None
        return name.decode() if name is not None else None

    def stuck(self, session: str, name: str) -> None:
        self._spawn(self._stick(session, name))

    async def _stick(self, session: str, name: str) -> None:
        await self._redis.set(_STICKY + session, name, ex=self._sticky_seconds)

    # -----------------------------------------------------------------------------------------

    def _spawn(self, write: Coroutine[Any, Any, object]) -> None:
        if len(self._pending) >= _MAX_PENDING:
            write.close()
            return
        task = asyncio.create_task(self._quietly(write))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @staticmethod
    async def _quietly(write: Coroutine[Any, Any, object]) -> None:
        try:
            await write
        except Exception:  # each process still applies its own cooldowns and sessions
            logger.warning("could not share routing state through Redis", exc_info=True)

    async def close(self) -> None:
        """Let the writes in flight finish (each is one round trip)."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=2)
