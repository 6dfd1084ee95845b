"""Upstream accounts and how a request picks one (SPEC §5.2 "route (pool, sticky session,
failover)", §5.9, §5.10 `routing`).

An *account* is one set of credentials for one provider: the operator's pool (the
`TOLLGATE_<PROVIDER>_API_KEY` account and the TOML `[[upstreams.<provider>]]` entries) and a
tenant's own key (BYOK), which comes first. Each account has an in-process `Health`: a cooldown
(after a 429, a quota error or a usage limit with a reset time), a success rate and the latency
of its recent calls, and its own rpm/tpm window. Nothing here touches Redis or the database on
the happy path: a tenant's keys and routing settings are cached in memory (`TenantRouting`),
reloaded after `byok_cache_seconds` or at once when the tenant changes them in this process.

Choosing is O(accounts): drop the ones cooling down or over their rpm/tpm, put the session's
sticky account first while it is healthy, order the rest by the tenant's strategy (weighted by
weight x health, round-robin, or best recent p50 latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from statistics import median

from redis.asyncio import Redis

from api.errors import CapacityQueueFull
from api.gateway.providers.base import Provider
from api.gateway.routing_shared import COOLDOWN_CHANNEL, SharedRouting
from api.settings import AccountSettings
from api.shield.engine import Shield

logger = logging.getLogger("tollgate.gateway")

# A tenant's keys or routing settings changed: every API process reloads them.
CHANNEL = "tollgate:tenant-routing-changed"
STRATEGIES = ("default", "cost", "latency", "round_robin", "weighted")
_WINDOW = 32  # recent calls an account's health looks at
_MAX_SESSIONS = 100_000


class Health:
    """One account's recent history, in this process."""

    __slots__ = (
        "cooldown_until",
        "failures",
        "latencies",
        "outcomes",
        "requests",
        "tokens",
        "window",
    )

    def __init__(self) -> None:
        self.cooldown_until = 0.0
        self.outcomes: deque[bool] = deque(maxlen=_WINDOW)
        self.failures = 0  # how many of `outcomes` are failures
        self.latencies: deque[float] = deque(maxlen=_WINDOW)
        self.window = 0  # the minute the rpm/tpm counts are for
        self.requests = 0
        self.tokens = 0

    def cooling(self, now: float) -> bool:
        return self.cooldown_until > now

    def cool(self, seconds: float, now: float) -> None:
        self.cooldown_until = max(self.cooldown_until, now + seconds)

    def _outcome(self, ok: bool) -> None:
        outcomes = self.outcomes
        if len(outcomes) == _WINDOW and not outcomes[0]:
            self.failures -= 1  # the oldest, about to drop out of the window
        outcomes.append(ok)
        if not ok:
            self.failures += 1

    def succeeded(self, seconds: float) -> None:
        self._outcome(True)
        self.latencies.append(seconds)

    def failed(self) -> None:
        self._outcome(False)

    @property
    def score(self) -> float:
        """The share of recent calls that succeeded (1.0 for an account not yet used), with a
        floor so an account that recovers gets traffic to prove it."""
        if not self.failures:
            return 1.0
        total = len(self.outcomes)
        return max((total - self.failures) / total, 0.05)

    @property
    def p50(self) -> float:
        return median(self.latencies) if self.latencies else 0.0

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self.window:
            self.window, self.requests, self.tokens = minute, 0, 0


@dataclass(slots=True)
class Account:
    name: str  # what usage events and traces show; never the key
    provider: Provider
    weight: int = 1
    rpm: int | None = None
    tpm: int | None = None
    capabilities: frozenset[str] = frozenset()
    byok: bool = False
    health: Health = field(default_factory=Health)

    def over_rate(self, now: float) -> float:
        """0 if the account may take a request now, else when its minute ends."""
        if self.rpm is None and self.tpm is None:
            return 0.0
        health = self.health
        wall = time.time()
        health._roll(wall)
        if (self.rpm is not None and health.requests >= self.rpm) or (
            self.tpm is not None and health.tokens >= self.tpm
        ):
            return now + (60 - wall % 60)
        return 0.0

    def counted(self) -> None:
        if self.rpm is not None or self.tpm is not None:
            self.health._roll(time.time())
            self.health.requests += 1

    def add_tokens(self, tokens: int) -> None:
        if self.tpm is not None:
            self.health._roll(time.time())
            self.health.tokens += tokens


@dataclass(slots=True)
class TenantRouting:
    """A tenant's own provider accounts and routing settings, as cached by the `Router`."""

    accounts: dict[str, Account] = field(default_factory=dict)  # provider → its BYOK account
    failover: bool = False
    strategy: str = "default"
    deadline: float = math.inf
    # The response cache's settings (`cache` in the tenant's settings); None: off.
    cache: CacheSettings | None = None
    # The semantic cache's (`semantic_cache`), on top of the response cache; None: off.
    semantic: SemanticSettings | None = None
    # The secret shield (`shield` in the tenant's settings), compiled; None: off.
    shield: Shield | None = None


@dataclass(frozen=True, slots=True)
class SemanticSettings:
    threshold: float = 0.92  # the least cosine similarity of a match
    max_entries: int = 10_000  # prompts kept per tenant; the oldest are evicted


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl_seconds: int = 3600
    max_temperature: float = 1.0  # requests sampled hotter than this are not cached
    billed_fraction: float = 0.0  # what a hit bills, as a fraction of the cost it saved


NO_TENANT = TenantRouting()

TenantLoader = Callable[[uuid.UUID], Awaitable[TenantRouting]]


class Router:
    """Every account per provider and the choice among them; one per process."""

    def __init__(
        self,
        pools: Mapping[str, list[Account]],
        *,
        loader: TenantLoader | None = None,
        tenant_ttl: float = 30.0,
        capacity_wait: float = 5.0,
        queue_size: int = 200,
        sticky_seconds: float = 3600.0,
        redis: Redis | None = None,
    ) -> None:
        self.pools = {name: list(accounts) for name, accounts in pools.items() if accounts}
        self._loader = loader
        self._tenant_ttl = tenant_ttl
        self._tenants: dict[uuid.UUID, TenantRouting] = {}
        self._loading: dict[uuid.UUID, asyncio.Future[TenantRouting]] = {}
        self._byok_health: dict[str, Health] = {}
        self.capacity_wait = capacity_wait
        self.queue_size = queue_size
        self.waiting = 0
        self._sticky: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._sticky_seconds = sticky_seconds
        self._turn: dict[str, int] = {}
        self._redis = redis
        self._listener: asyncio.Task[None] | None = None
        # Cooldowns and sticky sessions are shared with every other API process.
        self._shared = SharedRouting(redis, self._cool_by_name, sticky_seconds) if redis else None
        self._pool_health = {a.name: a.health for pool in self.pools.values() for a in pool}

    # Tenants ---------------------------------------------------------------------------------

    async def tenant(self, tenant_id: uuid.UUID) -> TenantRouting:
        """The tenant's routing, from memory; loaded once per `tenant_ttl` (one query)."""
        cached = self._tenants.get(tenant_id)
        if cached is not None and cached.deadline > time.monotonic():
            return cached
        if self._loader is None:
            return NO_TENANT
        pending = self._loading.get(tenant_id)
        if pending is not None:  # one load per tenant at a time, however many requests wait
            return await asyncio.shield(pending)
        future: asyncio.Future[TenantRouting] = asyncio.get_running_loop().create_future()
        self._loading[tenant_id] = future
        try:
            loaded = await self._loader(tenant_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._loading.pop(tenant_id, None)
        for account in loaded.accounts.values():  # health survives a reload
            account.health = self._byok_health.setdefault(account.name, account.health)
        loaded.deadline = time.monotonic() + self._tenant_ttl
        if len(self._tenants) >= _MAX_SESSIONS:
            self._tenants.clear()
        self._tenants[tenant_id] = loaded
        future.set_result(loaded)
        return loaded

    def tenant_changed(self, tenant_id: uuid.UUID) -> None:
        """The tenant saved a key or its settings: read them again on its next request."""
        self._tenants.pop(tenant_id, None)

    async def announce(self, tenant_id: uuid.UUID) -> None:
        """`tenant_changed` here and in every other API process (through Redis, if any)."""
        self.tenant_changed(tenant_id)
        if self._redis is not None:
            try:
                await self._redis.publish(CHANNEL, tenant_id.hex)
            except Exception:  # other processes still reload within the cache's TTL
                logger.exception("could not announce a routing change of tenant %s", tenant_id)

    def start(self) -> None:
        if self._redis is not None:
            self._listener = asyncio.create_task(self._listen(self._redis), name="routing")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._shared is not None:
            await self._shared.close()

    async def _listen(self, redis: Redis) -> None:
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL, COOLDOWN_CHANNEL)
                    if self._shared is not None:  # what other processes cooled while away
                        await self._shared.load()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        if message["channel"] == COOLDOWN_CHANNEL.encode():
                            if self._shared is not None:
                                self._shared.heard(message["data"])
                        else:
                            self.tenant_changed(uuid.UUID(message["data"].decode()))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("routing-change listener failed; reloading every tenant")
                self._tenants.clear()
                await asyncio.sleep(1)

    def configured(self, provider: str, tenant: TenantRouting) -> bool:
        return provider in tenant.accounts or provider in self.pools

    def serves(self, provider: str, tenant: TenantRouting, capability: str) -> bool:
        """Whether any account of `provider` may serve requests that need `capability`."""
        accounts = self.accounts(provider, tenant)
        claimed = any(capability in account.capabilities for account in accounts)
        return any(_may_serve(account, capability, claimed) for account in accounts)

    def accounts(self, provider: str, tenant: TenantRouting) -> list[Account]:
        own = tenant.accounts.get(provider)
        pool = self.pools.get(provider, [])
        return [own, *pool] if own is not None else pool

    # Choosing --------------------------------------------------------------------------------

    def choose(
        self,
        provider: str,
        tenant: TenantRouting,
        *,
        session: str | None = None,
        exclude: Collection[str] = (),
        capability: str | None = None,
    ) -> tuple[list[Account], float]:
        """The accounts to try, best first, and (when none is ready) when the first of the
        ones cooling down recovers (0 when there is none at all)."""
        accounts = self.accounts(provider, tenant)
        now = time.monotonic()
        claimed = capability is not None and any(capability in a.capabilities for a in accounts)
        if len(accounts) == 1 and not exclude and capability is None:  # the common case
            only = accounts[0]
            if only.health.cooldown_until <= now and only.rpm is None and only.tpm is None:
                return accounts, 0.0
        ready, recovers = _ready(accounts, now, exclude, capability, claimed)
        if not ready:
            return [], recovers
        if len(ready) > 1:
            ready = self._order(provider, ready, tenant)
        own = tenant.accounts.get(provider)
        if own is not None and ready[0] is not own and own in ready:  # the tenant's key first
            ready.remove(own)
            ready.insert(0, own)
        if session is not None:
            sticky = self._sticky.get(session)
            if sticky is not None and sticky[1] > now and ready[0].name != sticky[0]:
                for index, account in enumerate(ready):
                    if account.name == sticky[0]:
                        ready.insert(0, ready.pop(index))
                        break
        return ready, 0.0

    def _order(self, provider: str, ready: list[Account], tenant: TenantRouting) -> list[Account]:
        strategy = tenant.strategy
        if strategy == "round_robin":
            turn = self._turn.get(provider, 0)
            self._turn[provider] = turn + 1
            start = turn % len(ready)
            return ready[start:] + ready[:start]
        if strategy == "latency":
            # Unmeasured accounts first (p50 0): they have to be measured to be compared.
            return sorted(ready, key=lambda a: a.health.p50 / a.health.score)
        # default, weighted, cost (one provider: one price): one weighted draw picks the
        # first account, its weight scaled by health; the others follow as configured.
        weights = []
        total = 0.0
        for account in ready:
            score = account.health.score
            weight = account.weight * score * score  # a failing account gets next to nothing
            weights.append(weight)
            total += weight
        if total <= 0:
            return ready
        draw = random.random() * total  # load sharing, not a secret
        index = 0
        while index < len(weights) - 1:
            draw -= weights[index]
            if draw < 0:
                break
            index += 1
        return [ready[index], *ready[:index], *ready[index + 1 :]]

    def stick(self, session: str | None, account: Account) -> None:
        if session is None:
            return
        sticky = self._sticky
        current = sticky.get(session)
        deadline = time.monotonic() + self._sticky_seconds
        if current is not None and current[0] == account.name:
            if current[1] - deadline < -60:  # refresh at most once a minute
                sticky[session] = (account.name, deadline)
            return
        if len(sticky) >= _MAX_SESSIONS:
            sticky.popitem(last=False)
        sticky[session] = (account.name, deadline)
        if self._shared is not None:
            self._shared.stuck(session, account.name)

    async def recall(self, provider: str, tenant: TenantRouting, session: str | None) -> None:
        """Before choosing: the session's account as every process knows it, when the
        provider has a choice to make (one Redis read)."""
        if session is None or self._shared is None or len(self.accounts(provider, tenant)) < 2:
            return
        name = await self._shared.sticky(session)
        if name is not None:
            self._sticky[session] = (name, time.monotonic() + self._sticky_seconds)
            self._sticky.move_to_end(session)

    def cool(self, account: Account, seconds: float) -> None:
        """`account` takes no calls for `seconds`, in this process and every other."""
        account.health.cool(seconds, time.monotonic())
        if self._shared is not None:
            self._shared.cooled(account.name, seconds)

    def _cool_by_name(self, name: str, until: float) -> None:
        """A cooldown shared by another process (`until` is wall-clock time)."""
        health = self._pool_health.get(name) or self._byok_health.setdefault(name, Health())
        health.cool(until - time.time(), time.monotonic())

    async def wait_for_capacity(self, recovers: float, limit: float) -> None:
        """Wait until `recovers` (a monotonic time) in the bounded queue, or refuse with 503."""
        delay = recovers - time.monotonic()
        if (
            recovers == 0.0
            or delay > min(self.capacity_wait, limit)
            or (self.waiting >= self.queue_size)
        ):
            retry = max(1, math.ceil(delay)) if recovers else 1
            raise CapacityQueueFull(headers={"retry-after": str(retry)})
        self.waiting += 1
        try:
            await asyncio.sleep(max(delay, 0.0))
        finally:
            self.waiting -= 1


def _may_serve(account: Account, capability: str | None, claimed: bool) -> bool:
    """Capabilities (`"audio"`, `"images"`, `"embeddings"`) an account declares are all it
    serves beyond chat; one that declares none serves everything its provider offers, unless
    other accounts claim the capability (`claimed`): then only those serve it."""
    if capability is None:
        return True
    if claimed:
        return capability in account.capabilities
    return not account.capabilities


def _ready(
    accounts: list[Account],
    now: float,
    exclude: Collection[str],
    capability: str | None,
    claimed: bool = False,
) -> tuple[list[Account], float]:
    """The accounts that may take a call now; else when the first of the others recovers
    (0 when none will: all excluded or lacking the capability)."""
    ready: list[Account] = []
    recovers = math.inf
    for account in accounts:
        if account.name in exclude or not _may_serve(account, capability, claimed):
            continue
        until = account.health.cooldown_until
        if until <= now:
            until = account.over_rate(now)
        if until > now:
            recovers = min(recovers, until)
            continue
        ready.append(account)
    return ready, (0.0 if recovers == math.inf else recovers)


def pool_accounts(
    pools: Mapping[str, list[AccountSettings]], build: Callable[[AccountSettings], Provider | None]
) -> dict[str, list[Account]]:
    out: dict[str, list[Account]] = {}
    for name, configured in pools.items():
        accounts = []
        for item in configured:
            provider = build(item)
            if provider is not None:
                accounts.append(
                    Account(item.name, provider, item.weight, item.rpm, item.tpm,
                            item.capabilities)
                )  # fmt: skip
        if accounts:
            out[name] = accounts
    return out
