"""Hard caps and rate limits: an atomic reservation of each request's worst case.

Before a request is forwarded, its worst case (estimated prompt + the most output it may
produce, priced) is *held* against every limit that applies: the key's (`spend_usd`,
`tokens`, `requests` over day, month, total), its `rpm`/`tpm` (the current calendar minute)
and its tenant's, in one atomic step of the counter store: a Redis Lua script in production,
the event loop in the embedded default. When the worst case does not fit a budget but a
smaller output would, the request's `max_tokens` is clamped to what fits; when nothing fits,
it is refused with 402 (429 when a rate window is full: those are never clamped). After the
response the hold is released and the real usage added, in the same atomic step that makes
the usage event durable (`api/usage/ledger.py`). Holds of a process that died expire
after `HOLD_SECONDS`, so the budget comes back.

Counters start from the ledger: the first request of a period seeds its counter with the sum
of the usage already recorded (after flushing this process's pending events).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.alert.service import Crossing, crossings
from api.auth import limits as limit_rules
from api.auth.models import ApiKey
from api.errors import BudgetExceeded, RateLimited
from api.gateway.pricing import TOKENS_PER_PRICE_UNIT, Price, Usage
from api.gateway.pricing import cost_micros as cost_of
from api.kit.counters import (
    CounterStore,
    HoldRequest,
    LeaseRequest,
    RedisCounterStore,
    Settlement,
    Unseeded,
)
from api.kit.money import micros_to_usd
from api.kit.time import utcnow
from api.usage import repository as usage_repository

logger = logging.getLogger("tollgate.budget")

TTL_SECONDS = {"minute": 120, "day": 2 * 86_400, "month": 32 * 86_400, "total": 400 * 86_400}
# How long a hold outlives its request if the process dies. While the request runs, the
# pipeline moves its holds' expiry on every third of this (`Reservations.refresh`), so a
# stream longer than this keeps its hold.
HOLD_SECONDS = 900
_ATTEMPTS = 4
_UNLIMITED = 1 << 62
# Leases (Redis only): how long a process admits requests against its share of a counter's
# room before asking Redis again, and how much spare room it asks for: this many more
# requests like the one that renews it (only while four times that is left, see
# `api/kit/counters.py`).
LEASE_SECONDS = 5.0
LEASE_REQUESTS = 16


@dataclass(frozen=True, slots=True)
class Demand:
    """The most a request can consume: its prompt (an upper bound), its output budget per
    answer, and what its fields add (`api/gateway/exposure.py`): `choices` answers, input
    billed at up to `input_price` (cache writes; micro-USD per million tokens, None: the
    price's own), and per-use fees. The endpoints of SPEC §5.12 know their worst case as a
    usage (`of_usage`): its cost, exactly (`cost_micros`), and its per-unit use (`units`, what
    the unit metrics count); with no output cap to lower (`clamp` False), a request that does
    not fit is refused whole."""

    input_tokens: int
    max_output_tokens: int
    price: Price
    choices: int = 1
    input_price: int | None = None
    fee_micros: int = 0
    units: Units | None = None
    clamp: bool = True
    cost_micros: int | None = None

    @classmethod
    def of_usage(cls, worst: Usage, price: Price) -> Demand:
        """A request whose worst case is a known usage: nothing to clamp."""
        units = Units(worst.audio_seconds, worst.characters, worst.images)
        return cls(
            worst.input_tokens, worst.output_tokens, price, units=units, clamp=False,
            cost_micros=cost_of(worst, price),
        )  # fmt: skip

    def rates(self) -> tuple[int, int]:
        """Micro-USD per million input and output tokens, at the prompt's price tier."""
        price = self.price.for_prompt(self.input_tokens)
        given = self.input_price
        return (price.input if given is None else max(given, price.input)), price.output


@dataclass(frozen=True, slots=True)
class Units:
    """The most a request uses of each unit metric (`limit_rules.UNIT_METRICS`)."""

    audio_seconds: int = 0
    characters: int = 0
    images: int = 0

    def of(self, metric: str) -> int:
        return int(getattr(self, metric))


@dataclass(slots=True)
class _Lease:
    """This process's share of one counter's room: a member of the counter's holds in Redis
    (like a request's hold, and expiring like one), which requests are admitted against
    here, with no round trip, until it runs out or LEASE_SECONDS pass; then the next request
    renews it. The room it leaves others is the room minus the whole lease, so the cap holds
    across processes exactly as with a hold per request."""

    member: str = ""  # "<lease id>:<amount>" in the counter's holds; "" none
    granted: int = 0  # the member's amount
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # id → amount, deadline
    inflight: int = 0  # the holds' amounts: requests admitted under it, not settled
    # What requests settled since the member was granted: the counter counts it and so does
    # the member, until the next renewal drops the member.
    settled: int = 0
    settled_while_renewing: int = 0
    until: float = 0.0  # admits requests until then (monotonic)
    renewing: asyncio.Event | None = None  # set once the renewal under way is done
    room: int = 0  # the counter's room as last seen, less what was admitted here since

    def admits(self, amount: int, now: float) -> bool:
        return (
            self.renewing is None
            and now < self.until
            and self.granted - self.inflight - self.settled >= amount
        )

    def hold(self, hold_id: str, amount: int, now: float) -> None:
        self.holds[hold_id] = (amount, now + HOLD_SECONDS)
        self.inflight += amount
        self.room -= amount

    def settle(self, hold_id: str, actual: int) -> None:
        amount, _ = self.holds.pop(hold_id, (0, 0.0))
        self.inflight -= amount
        if self.renewing is not None:
            self.settled_while_renewing += actual
        else:
            self.settled += actual

    def renew(self) -> None:
        self.renewing = asyncio.Event()

    def renewed(self) -> None:
        if self.renewing is not None:
            self.renewing.set()
            self.renewing = None

    def expire(self, now: float) -> None:
        """Forget holds past their deadline, as Redis forgets a dead process's holds."""
        for hold_id, (amount, deadline) in list(self.holds.items()):
            if deadline <= now:
                del self.holds[hold_id]
                self.inflight -= amount


@dataclass(slots=True)
class Settling:
    tenant_id: uuid.UUID | None = None
    held: list[tuple[limit_rules.Limit, str, int]] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    # Requests admitted under leases: (lease, hold id, actual) to book once settled.
    leased: list[tuple[_Lease, str, int]] = field(default_factory=list)


@dataclass(slots=True)
class Reservation:
    hold_id: str
    tenant_id: uuid.UUID | None = None
    held: list[tuple[limit_rules.Limit, str, int]] = field(default_factory=list)
    max_output_tokens: int = 0
    clamped: bool = False
    rate_headers: dict[str, str] = field(default_factory=dict)
    leases: list[_Lease] | None = None  # admitted under these (one per counter), not holds


class BudgetGuard(Protocol):
    async def reserve(
        self, key: ApiKey, tenant_limits: Sequence[dict[str, Any]], demand: Callable[[], Demand]
    ) -> Reservation:
        """Hold the worst case or raise `BudgetExceeded`; `demand` is computed only if needed."""
        ...

    def settlement(
        self, reservation: Reservation, usage: Usage, cost_micros: int, succeeded: bool
    ) -> Settling:
        """What settling the request does to each counter; the ledger applies it atomically
        with the usage event. Called once per request."""
        ...

    def settled(self, settling: Settling, after: list[int | None]) -> None:
        """The counters now read `after`: fire the alerts whose thresholds were crossed."""
        ...

    async def limits_changed(self, owner_id: uuid.UUID, scope: str = "key") -> None:
        """A key's (or tenant's) limits changed: recount from the ledger on the next request."""
        ...

    async def refresh(self, reservations: Sequence[Reservation]) -> None:
        """These requests still run: their holds expire HOLD_SECONDS from now."""
        ...


def counter_names(
    owner_id: uuid.UUID, at: datetime, scope: str = "key"
) -> dict[limit_rules.Period, str]:
    """Name stems of a key's (or a tenant's) counters for each period containing `at`."""
    base = f"{scope}:{owner_id}:"
    month = f"{at.year:04d}{at.month:02d}"
    day = f"{month}{at.day:02d}"
    return {
        "minute": f"{base}n{day}{at.hour:02d}{at.minute:02d}",
        "day": f"{base}d{day}",
        "month": f"{base}m{month}",
        "total": f"{base}t",
    }


COUNTER_PATTERNS = ("key:*", "tenant:*")


def rate_limits(key: ApiKey) -> list[limit_rules.Limit]:
    """`rpm` and `tpm` as limits over the current calendar minute (OpenAI counts a request's
    prompt plus its `max_tokens` against TPM up front; so does this)."""
    out = []
    if key.rpm is not None:
        out.append(limit_rules.Limit("requests", "minute", key.rpm))
    if key.tpm is not None:
        out.append(limit_rules.Limit("tokens", "minute", key.tpm))
    return out


@dataclass(frozen=True, slots=True)
class _Window:
    """A rate window's place among a key's limits and its `x-ratelimit-*` header names."""

    index: int
    limit: str
    remaining: str
    reset: str
    maximum: str


def _windows(limits: list[limit_rules.Limit]) -> list[_Window]:
    out = []
    for index, limit in enumerate(limits):
        if limit.period == "minute":
            kind = "requests" if limit.metric == "requests" else "tokens"
            header = f"x-ratelimit-{{}}-{kind}".format
            out.append(
                _Window(
                    index, header("limit"), header("remaining"), header("reset"), str(limit.max)
                )
            )
    return out


def rate_headers(
    windows: list[_Window], amounts: list[int], rooms: list[int], held: bool, clock: float
) -> dict[str, str]:
    """OpenAI's `x-ratelimit-*` headers for the key's rpm/tpm windows (`clock`: epoch seconds)."""
    headers: dict[str, str] = {}
    reset = f"{_seconds_left_in_minute(clock)}s"
    for window in windows:
        room = rooms[window.index]
        left = room - amounts[window.index] if held else room
        headers[window.limit] = window.maximum
        headers[window.remaining] = str(max(left, 0))
        headers[window.reset] = reset
    return headers


@dataclass(frozen=True, slots=True)
class Scoped:
    """A limit and whose usage it counts: one key's, or its whole tenant's."""

    limit: limit_rules.Limit
    scope: str  # "key" | "tenant"
    owner_id: uuid.UUID

    def counter(self, at: datetime) -> str:
        stem = counter_names(self.owner_id, at, self.scope)[self.limit.period]
        return f"{stem}:{self.limit.metric}"


_MAX_PLANS = 50_000


@dataclass(slots=True)
class _Plan:
    """A key's limits (its own, its rate windows, its tenant's) and their counters' names,
    which change only when the minute does."""

    key: ApiKey
    tenant_limits: Sequence[dict[str, Any]]
    scoped: list[Scoped]
    limits: list[limit_rules.Limit]
    windows: list[_Window] = field(default_factory=list)  # the rate windows among `limits`
    minute: int = -1
    counters: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.windows = _windows(self.limits)

    def names(self, clock: float) -> list[str]:
        minute = int(clock // 60)
        if minute != self.minute:
            at = datetime.fromtimestamp(minute * 60, UTC)
            self.counters = [item.counter(at) for item in self.scoped]
            self.minute = minute
        return self.counters


def worst_case(limit: limit_rules.Limit, demand: Demand, output_tokens: int) -> int:
    """`output_tokens` per answer, for each of the demand's answers."""
    if limit.metric == "requests":
        return 1
    if limit.metric in limit_rules.UNIT_METRICS:
        return demand.units.of(limit.metric) if demand.units is not None else 0
    output = output_tokens * demand.choices
    if limit.metric == "tokens":
        return demand.input_tokens + output
    if demand.cost_micros is not None:
        return demand.cost_micros
    input_rate, output_rate = demand.rates()
    numerator = demand.input_tokens * input_rate + output * output_rate
    return -(-numerator // TOKENS_PER_PRICE_UNIT) + demand.fee_micros


def affordable_output(limit: limit_rules.Limit, room: int, demand: Demand) -> int:
    """The largest output budget per answer that still fits in `room` (negative: not even
    the prompt)."""
    if limit.metric == "requests":
        return _UNLIMITED if room >= 1 else -1
    if limit.metric in limit_rules.UNIT_METRICS:
        used = demand.units.of(limit.metric) if demand.units is not None else 0
        return _UNLIMITED if room >= used else -1
    if limit.metric == "tokens":
        left = room - demand.input_tokens
        return left // demand.choices if left >= 0 else -1
    if demand.cost_micros is not None:
        return _UNLIMITED if room >= demand.cost_micros else -1
    input_rate, output_rate = demand.rates()
    left = (room - demand.fee_micros) * TOKENS_PER_PRICE_UNIT - demand.input_tokens * input_rate
    if output_rate == 0:
        return _UNLIMITED if left >= 0 else -1
    return left // (output_rate * demand.choices) if left >= 0 else -1


def actual(limit: limit_rules.Limit, usage: Usage, cost_micros: int, succeeded: bool) -> int:
    if limit.metric == "spend_usd":
        return cost_micros
    if limit.metric == "tokens":
        return usage.total_tokens
    if limit.metric in limit_rules.UNIT_METRICS:
        return int(getattr(usage, limit.metric))
    # A request counts when it reached the model: it succeeded, or it was billed for tokens
    # (a cut-off stream). The ledger recount in usage.repository applies the same rule.
    return 1 if succeeded or usage.total_tokens else 0


class Reservations:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        counters: CounterStore,
        flush_ledger: Callable[[], Awaitable[None]],
        on_crossing: Callable[[list[Crossing]], None] | None = None,
        leases: bool | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._counters = counters
        self._flush_ledger = flush_ledger
        self._on_crossing = on_crossing
        self._plans: dict[int, _Plan] = {}
        # Leases save a round trip to Redis; the embedded default's counters are local anyway.
        if leases is None:
            leases = isinstance(counters, RedisCounterStore)
        self._leasing = leases
        self._leases: dict[tuple[str, int], _Lease] = {}  # (counter, max) → lease
        # Leases dropped when Redis could not be reached: their members still hold room there,
        # given back by the sweep once Redis answers and nothing admitted under them is in
        # flight (until then, or for a member whose reply was lost, they expire with
        # HOLD_SECONDS). Without this, a Redis restart left a key refused for 15 minutes.
        self._orphans: list[tuple[str, int, _Lease]] = []
        self._sweeper: asyncio.Task[None] | None = None
        # Hold ids: unique across processes and restarts, cheaper than a uuid per request.
        self._hold_ids = map(f"{secrets.token_hex(8)}{{:x}}".format, itertools.count())

    def _plan(self, key: ApiKey, tenant_limits: Sequence[dict[str, Any]]) -> _Plan:
        """The limits that apply to `key`, parsed once per cached key object (a change to a
        key or its tenant's limits replaces the object, see `api/auth/cache.py`)."""
        plan = self._plans.get(id(key))
        if plan is not None and plan.key is key and plan.tenant_limits is tenant_limits:
            return plan
        scoped = [
            Scoped(limit_rules.Limit.from_json(item), "key", key.id) for item in key.limits
        ] + [Scoped(limit, "key", key.id) for limit in rate_limits(key)]
        scoped += [
            Scoped(limit_rules.Limit.from_json(item), "tenant", key.tenant_id)
            for item in tenant_limits
        ]
        plan = _Plan(key, tenant_limits, scoped, [item.limit for item in scoped])
        if len(self._plans) >= _MAX_PLANS:
            self._plans.clear()
        self._plans[id(key)] = plan
        return plan

    async def reserve(
        self, key: ApiKey, tenant_limits: Sequence[dict[str, Any]], demand: Callable[[], Demand]
    ) -> Reservation:
        plan = self._plan(key, tenant_limits)
        reservation = Reservation(hold_id=next(self._hold_ids), tenant_id=key.tenant_id)
        if not plan.scoped:
            return reservation
        scoped, limits = plan.scoped, plan.limits
        need = demand()
        clock = time.time()
        names = plan.names(clock)
        output = need.max_output_tokens
        leases = await self._leased(reservation, plan, need, clock) if self._leasing else None
        if reservation.leases is not None:
            return reservation
        rooms = [0] * len(limits)
        for _ in range(_ATTEMPTS + len(limits)):
            holds = [
                HoldRequest(name, limit.max, worst_case(limit, need, output))
                for limit, name in zip(limits, names, strict=True)
            ]
            expiry_ms = int((clock + HOLD_SECONDS) * 1000)
            try:
                if leases is not None and all(lease.renewing is None for lease in leases):
                    held, rooms = await self._renew(reservation, leases, holds, expiry_ms)
                else:  # another request is renewing these leases: a hold of its own
                    held, rooms = await self._counters.reserve(
                        reservation.hold_id, holds, expiry_ms, TTL_SECONDS["total"]
                    )
            except Unseeded as missing:
                await self._seed(scoped[missing.index], names[missing.index], utcnow())
                continue
            if plan.windows:
                amounts = [hold.amount for hold in holds]
                reservation.rate_headers = rate_headers(plan.windows, amounts, rooms, held, clock)
            if held:
                reservation.held = [
                    (limit, hold.counter, hold.amount)
                    for limit, hold in zip(limits, holds, strict=True)
                ]
                reservation.max_output_tokens = output
                reservation.clamped = output < need.max_output_tokens
                return reservation
            for limit, hold, room in zip(limits, holds, rooms, strict=True):
                if limit.period == "minute" and hold.amount > room:  # a full window: wait, 429
                    raise _rate_limited(limit, clock, reservation.rate_headers)
            fits = min(
                affordable_output(limit, room, need)
                for limit, room in zip(limits, rooms, strict=True)
            )
            if fits < 1 or not need.clamp:
                if need.clamp:  # not even the smallest request fits (one with a fixed size can
                    self._exhausted(key.tenant_id, scoped, names, rooms, need)  # be large)
                raise _exceeded(limits, rooms, need)
            output = min(output - 1, fits)  # fewer output tokens fit: ask again with those
        raise _exceeded(limits, rooms, need)

    # Leases

    def _leases_of(self, names: list[str], limits: list[limit_rules.Limit]) -> list[_Lease]:
        leases = []
        for name, limit in zip(names, limits, strict=True):
            lease = self._leases.get((name, limit.max))
            if lease is None:
                lease = self._leases[(name, limit.max)] = _Lease()
            leases.append(lease)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return leases

    async def _leased(
        self, reservation: Reservation, plan: _Plan, need: Demand, clock: float
    ) -> list[_Lease]:
        """Admit the request against this process's leases if they afford it, waiting for a
        renewal under way first; returns the leases (to renew, unless it was admitted)."""
        for _ in range(_ATTEMPTS):
            leases = self._leases_of(plan.counters, plan.limits)  # a failed renewal drops them
            if self._admit(reservation, plan, leases, need, clock):
                break
            renewals = [lease.renewing for lease in leases if lease.renewing is not None]
            if not renewals:
                break
            # Another request is renewing them: its answer is due sooner than our own.
            await renewals[0].wait()
        return leases

    def _admit(
        self,
        reservation: Reservation,
        plan: _Plan,
        leases: list[_Lease],
        need: Demand,
        clock: float,
    ) -> bool:
        """Admit the request against this process's leases, whole or not at all (no round
        trip, no clamping: a request that does not fit renews them)."""
        now = time.monotonic()
        output = need.max_output_tokens
        amounts = [worst_case(limit, need, output) for limit in plan.limits]
        for lease, amount in zip(leases, amounts, strict=True):
            if not lease.admits(amount, now):
                return False
        for lease, amount in zip(leases, amounts, strict=True):
            lease.hold(reservation.hold_id, amount, now)
        reservation.leases = leases
        reservation.held = list(zip(plan.limits, plan.counters, amounts, strict=True))
        reservation.max_output_tokens = output
        if plan.windows:  # as this process last saw them: other processes' use shows later
            rooms = [lease.room + amount for lease, amount in zip(leases, amounts, strict=True)]
            reservation.rate_headers = rate_headers(plan.windows, amounts, rooms, True, clock)
        return True

    async def _renew(
        self,
        reservation: Reservation,
        leases: list[_Lease],
        holds: list[HoldRequest],
        expiry_ms: int,
    ) -> tuple[bool, list[int]]:
        """Ask Redis for the request's holds and new leases in one atomic step: each lease's
        old member is replaced by one carrying what is in flight under it, plus the request,
        plus spare room; near a cap, the request is held on its own (`reservation.hold_id`),
        as without leases. Returns whether the request fits, and each counter's room for it."""
        requests = [
            LeaseRequest(
                counter=hold.counter,
                maximum=hold.maximum,
                amount=hold.amount,
                carry=lease.inflight,
                chunk=hold.amount * LEASE_REQUESTS,
                old=lease.member,
            )
            for hold, lease in zip(holds, leases, strict=True)
        ]
        lease_id = next(self._hold_ids)
        for lease in leases:
            lease.renew()
        try:
            leased = await self._store().lease(
                lease_id, requests, expiry_ms, TTL_SECONDS["total"], reservation.hold_id
            )
        except Unseeded:  # the script changed nothing
            for lease in leases:
                lease.renewed()
            raise
        except BaseException:
            self._forget(leases)
            raise
        now = time.monotonic()
        for lease, granted, room, hold in zip(
            leases, leased.granted, leased.rooms, holds, strict=True
        ):
            _install(lease, lease_id, granted)
            lease.room = room
            if leased.fits and leased.under_lease:
                lease.hold(reservation.hold_id, hold.amount, now)
                lease.until = now + LEASE_SECONDS
        if leased.fits and leased.under_lease:
            reservation.leases = leases
        return leased.fits, leased.rooms

    def _store(self) -> RedisCounterStore:
        assert isinstance(self._counters, RedisCounterStore)
        return self._counters

    def _forget(self, leases: list[_Lease]) -> None:
        """Whether Redis replaced these leases is unknown: stop using them. Their members,
        old or new, expire as a dead process's holds do."""
        dead = {id(lease) for lease in leases}
        for (name, maximum), lease in list(self._leases.items()):
            if id(lease) in dead:
                del self._leases[(name, maximum)]
                if lease.member:
                    self._orphans.append((name, maximum, lease))
        for lease in leases:
            lease.until = 0.0
            lease.renewed()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS)
            try:
                await self.give_back()
            except Exception:
                logger.exception("could not give back idle leases")

    async def give_back(self, everything: bool = False) -> None:
        """Shrink the leases no request renewed in LEASE_SECONDS (`everything`: all of them)
        to what is still in flight under them: their spare room is other processes' again."""
        now = time.monotonic()
        for (name, maximum), lease in list(self._leases.items()):
            if lease.renewing is not None or (now < lease.until and not everything):
                continue
            lease.expire(now)
            if lease.member == "":
                if not lease.holds:
                    del self._leases[(name, maximum)]
                continue
            if lease.granted == lease.inflight and lease.settled == 0:
                continue  # it holds only what is in flight
            lease_id = next(self._hold_ids)
            request = LeaseRequest(name, maximum, 0, lease.inflight, 0, lease.member)
            expiry_ms = int((time.time() + HOLD_SECONDS) * 1000)
            lease.renew()
            try:
                leased = await self._store().lease(
                    lease_id, [request], expiry_ms, TTL_SECONDS["total"]
                )
            except BaseException:
                self._forget([lease])
                raise
            _install(lease, lease_id, leased.granted[0])
        await self._give_back_orphans(now)

    async def _give_back_orphans(self, now: float) -> None:
        """Shrink each dropped lease's member to nothing, once no request admitted under it
        is in flight: what settled under it is in the counter already, so the member only
        counts it twice. Redis still down: left for the next sweep."""
        expiry_ms = int((time.time() + HOLD_SECONDS) * 1000)
        for orphan in list(self._orphans):
            name, maximum, lease = orphan
            lease.expire(now)
            if lease.inflight > 0:
                continue
            request = LeaseRequest(name, maximum, 0, 0, 0, lease.member)
            try:
                await self._store().lease(
                    next(self._hold_ids), [request], expiry_ms, TTL_SECONDS["total"]
                )
            except Unseeded:  # the counter itself is gone, and its holds with it
                pass
            except Exception:
                logger.debug("a dropped lease of %s could not be given back yet", name)
                continue
            self._orphans.remove(orphan)

    async def close(self) -> None:
        """Give every lease back (once the last request has settled)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        try:
            await self.give_back(everything=True)
        except Exception:  # they expire on their own
            logger.exception("could not give back the leases")

    async def _seed(self, item: Scoped, name: str, now: datetime) -> None:
        limit = item.limit
        since = limit_rules.period_start(limit.period, now)
        # A rate window starts every minute, at its first request: nothing of that minute can
        # wait in the ledger then (usage is counted in the window's counter from its start), so
        # it is read without flushing the ledger, which drained the whole stream in the API
        # process once a minute per key. (A window dropped mid-minute, by a key's PATCH or a
        # Redis restart, may miss what its last second of usage has not yet written.)
        if limit.period != "minute":
            await self._flush_ledger()
        async with self._sessionmaker() as session:
            if item.scope == "tenant":
                totals = await usage_repository.tenant_totals(session, item.owner_id, since)
            else:
                totals = await usage_repository.key_totals_unscoped(session, item.owner_id, since)
        await self._counters.seed(name, totals.used(limit.metric), TTL_SECONDS[limit.period])

    def settlement(
        self, reservation: Reservation, usage: Usage, cost_micros: int, succeeded: bool
    ) -> Settling:
        held, reservation.held = reservation.held, []
        leases, reservation.leases = reservation.leases, None
        hold_id = reservation.hold_id
        settlements = [
            Settlement(
                counter=name,
                member="" if leases else f"{hold_id}:{amount}",  # a lease has no hold to drop
                actual=actual(limit, usage, cost_micros, succeeded),
                ttl_seconds=TTL_SECONDS[limit.period],
            )
            for limit, name, amount in held
        ]
        leased = [
            (lease, hold_id, item.actual)
            for lease, item in zip(leases or [], settlements, strict=False)
        ]
        return Settling(reservation.tenant_id, held, settlements, leased)

    async def refresh(self, reservations: Sequence[Reservation]) -> None:
        expiry_ms = int((time.time() + HOLD_SECONDS) * 1000)
        deadline = time.monotonic() + HOLD_SECONDS
        members: dict[tuple[str, str], None] = {}  # in order, once each
        for reservation in reservations:
            leases = reservation.leases
            if leases is None:
                for _, name, amount in reservation.held:
                    members[(name, f"{reservation.hold_id}:{amount}")] = None
                continue
            for lease, (_, name, amount) in zip(leases, reservation.held, strict=False):
                if reservation.hold_id in lease.holds:  # settled ones are gone
                    lease.holds[reservation.hold_id] = (amount, deadline)
                if lease.member:  # the request is held as part of its lease's member
                    members[(name, lease.member)] = None
        if members:
            await self._counters.extend(list(members), expiry_ms)

    def _exhausted(
        self,
        tenant_id: uuid.UUID,
        scoped: list[Scoped],
        names: list[str],
        rooms: list[int],
        need: Demand,
    ) -> None:
        """A limit that refuses even the smallest request is at 100 %, whatever its counter
        says (worst cases are upper bounds, so usage can stop just short of the cap)."""
        if self._on_crossing is None:
            return
        found = [
            replace(crossing, used=max(item.limit.max - room, 0))  # held and settled
            for item, name, room in zip(scoped, names, rooms, strict=True)
            if item.limit.period != "minute" and affordable_output(item.limit, room, need) < 1
            for crossing in crossings(tenant_id, name, item.limit, -1, item.limit.max)
            if crossing.threshold == 100
        ]
        if found:
            self._on_crossing(found)

    def settled(self, settling: Settling, after: list[int | None]) -> None:
        # The counters have the actual usage now (or will be recounted from the ledger): the
        # leases stop holding these requests' worst cases and count what they used instead.
        for lease, hold_id, used in settling.leased:
            lease.settle(hold_id, used)
        if self._on_crossing is None or settling.tenant_id is None:
            return
        found = [
            crossing
            for (limit, name, _), item, value in zip(
                settling.held, settling.settlements, after, strict=True
            )
            if value is not None
            for crossing in crossings(settling.tenant_id, name, limit, value - item.actual, value)
        ]
        if found:
            self._on_crossing(found)

    async def limits_changed(self, owner_id: uuid.UUID, scope: str = "key") -> None:
        # A counter is only kept up to date while its limit exists; one left from before the
        # limit was removed would undercount once it comes back. Recount from the ledger.
        now = utcnow()
        names = [
            f"{stem}:{metric}"
            for stem in counter_names(owner_id, now, scope).values()
            for metric in ("spend_usd", "tokens", "requests", *limit_rules.UNIT_METRICS)
        ]
        prefix = f"{scope}:{owner_id}:"
        for (name, _), lease in self._leases.items():
            if name.startswith(prefix):
                lease.until = 0.0  # renewed against the new limits before admitting again
        try:
            await self._counters.delete(names)
        except Exception:  # the change is committed; the counters expire on their own
            logger.exception("could not reset the counters of %s %s", scope, owner_id)


def _seconds_left_in_minute(clock: float) -> int:
    return 60 - int(clock % 60)


def _rate_limited(limit: limit_rules.Limit, clock: float, headers: dict[str, str]) -> RateLimited:
    per_minute = "requests per minute" if limit.metric == "requests" else "tokens per minute"
    return RateLimited(
        f"Rate limit of {limit.max} {per_minute} reached for this key.",
        headers={**headers, "retry-after": str(_seconds_left_in_minute(clock))},
    )


def _exceeded(limits: list[limit_rules.Limit], rooms: list[int], need: Demand) -> BudgetExceeded:
    for limit, room in zip(limits, rooms, strict=True):
        refused = (
            affordable_output(limit, room, need) < 1
            if need.clamp
            else worst_case(limit, need, need.max_output_tokens) > room
        )
        if refused:
            amount = (
                f"${micros_to_usd(limit.max):.2f}" if limit.metric == "spend_usd" else limit.max
            )
            noun = _NOUNS[limit.metric]
            if need.clamp:
                return BudgetExceeded(
                    f"This key has reached its {limit.period} {noun} limit of {amount}."
                )
            left = f"${micros_to_usd(max(room, 0)):.6f}" if limit.metric == "spend_usd" else room
            return BudgetExceeded(
                f"This request does not fit in this key's {limit.period} {noun} limit of "
                f"{amount} ({left} left)."
            )
    return BudgetExceeded("This request does not fit in this key's remaining budget.")


_NOUNS = {
    "spend_usd": "spend",
    "tokens": "token",
    "requests": "request",
    "audio_seconds": "audio-seconds",
    "characters": "character",
    "images": "image",
}


def _install(lease: _Lease, lease_id: str, granted: int) -> None:
    """The lease's member is now `<lease_id>:<granted>` (none when 0), admitting nothing until
    the caller says so."""
    lease.member = f"{lease_id}:{granted}" if granted else ""
    lease.granted = granted
    lease.settled, lease.settled_while_renewing = lease.settled_while_renewing, 0
    lease.until = 0.0
    lease.renewed()
