"""Budget leases against a real Redis: a process admits requests against its share of a
counter's room without a round trip, and the cap still holds exactly across processes.

Each `Process` here is what one API process has: its own Redis connection, its own
`Reservations` (and so its own leases), settling through the same Lua call the ledger uses."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from api.auth.models import ApiKey
from api.errors import BudgetExceeded
from api.gateway import budget
from api.gateway.budget import Demand, Reservations
from api.gateway.pricing import Price, Usage
from api.kit.counters import HoldRequest, LeaseRequest, RedisCounterStore, Unseeded
from api.kit.resp import PipelinedRedis

PRICE = Price(input=1_000_000, cached_input=1_000_000, output=1_000_000)  # 1 µUSD a token


def _key(limits: list[dict[str, Any]]) -> ApiKey:
    return ApiKey(
        id=uuid.uuid4(), tenant_id=uuid.uuid4(), name="k", scope="standard",
        prefix="tg_test", last_four="abcd", limits=limits, rpm=None, tpm=None,
    )  # fmt: skip


async def _no_ledger() -> None:
    return None


class Process:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis = Redis.from_url(redis_url)
        self.fast = PipelinedRedis(redis_url)
        self.store = RedisCounterStore(self.redis, prefix=prefix, fast=self.fast)
        self.budget = Reservations(None, self.store, _no_ledger)  # type: ignore[arg-type]
        self.calls = {"lease": 0, "reserve": 0}
        for name in self.calls:
            self._count(name)

    def _count(self, name: str) -> None:
        method = getattr(self.store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        setattr(self.store, name, counted)

    async def call(self, key: ApiKey, prompt: int, max_output: int, output: int) -> int | None:
        """One request: reserve, use up to `output` tokens, settle. Its tokens, or None: 402."""
        try:
            reservation = await self.budget.reserve(
                key, (), lambda: Demand(prompt, max_output, PRICE)
            )
        except BudgetExceeded:
            return None
        await asyncio.sleep(random.random() * 0.002)
        usage = Usage(input_tokens=prompt, output_tokens=min(output, reservation.max_output_tokens))
        settling = self.budget.settlement(reservation, usage, usage.total_tokens, True)
        after = await self.store.release(settling.settlements)
        self.budget.settled(settling, after)
        return usage.total_tokens

    async def close(self) -> None:
        await self.budget.close()
        await self.fast.close()
        await self.redis.aclose()


@pytest.fixture
async def processes(redis_url: str) -> AsyncIterator[list[Process]]:
    prefix = f"test:{uuid.uuid4().hex}:"
    started = [Process(redis_url, prefix), Process(redis_url, prefix)]
    yield started
    for process in started:
        await process.close()


async def _seed(process: Process, key: ApiKey) -> None:
    for name in _counters(key):
        await process.store.seed(name, 0, 3600)


def _counters(key: ApiKey) -> list[str]:
    from api.kit.time import utcnow

    stems = budget.counter_names(key.id, utcnow())
    return [f"{stems[limit['period']]}:{limit['metric']}" for limit in key.limits]


async def _members(process: Process, counter: str) -> list[bytes]:
    members: list[bytes] = await process.redis.zrange(
        f"{process.store._prefix}{counter}:holds", 0, -1
    )
    return members


class TestScript:
    async def test_lease_replaces_the_old_member_and_takes_spare_room_only_far_from_the_cap(
        self, processes: list[Process]
    ):
        store, process = processes[0].store, processes[0]

        async def lease(
            lease_id: str, *requests: LeaseRequest, hold: str = "r"
        ) -> tuple[bool, list[int], list[int]]:
            leased = await store.lease(lease_id, list(requests), 2**50, 60, hold)
            if leased.fits and requests[0].amount:  # held under the lease, or on its own
                assert leased.under_lease == (leased.granted[0] > requests[0].carry)
            return leased.fits, leased.rooms, leased.granted

        with pytest.raises(Unseeded):
            await lease("L0", LeaseRequest("a", 1000, 10, 0, 160, ""))
        await store.seed("a", 0, 60)
        # Room 1000: the request's 10 and a chunk of 160 (990 left is four chunks or more).
        assert await lease("L1", LeaseRequest("a", 1000, 10, 0, 160, "")) == (True, [1000], [170])
        assert await _members(process, "a") == [b"L1:170"]
        # 20 still in flight under L1 are carried over: room 1000 - 20.
        assert await lease("L2", LeaseRequest("a", 1000, 10, 20, 160, "L1:170")) == (
            True, [980], [190],
        )  # fmt: skip
        assert await _members(process, "a") == [b"L2:190"]
        # Another process's hold counts. Less than four chunks left: no spare room, and the
        # request is held on its own; the lease keeps its carry.
        assert await store.reserve("h", [HoldRequest("a", 1000, 300)], 2**50, 60) == (True, [810])
        assert await lease("L3", LeaseRequest("a", 1000, 100, 20, 160, "L2:190"), hold="r3") == (
            True, [680], [20],
        )  # fmt: skip
        assert sorted(await _members(process, "a")) == [b"L3:20", b"h:300", b"r3:100"]
        # A request that does not fit: only the carry is held again.
        assert await lease("L4", LeaseRequest("a", 1000, 700, 20, 160, "L3:20")) == (
            False, [580], [20],
        )  # fmt: skip
        assert sorted(await _members(process, "a")) == [b"L4:20", b"h:300", b"r3:100"]
        # A counter without a starting value changes nothing, unless only giving back.
        with pytest.raises(Unseeded):
            await lease(
                "L5",
                LeaseRequest("a", 1000, 1, 20, 16, "L4:20"),
                LeaseRequest("b", 9, 1, 0, 16, ""),
            )
        assert sorted(await _members(process, "a")) == [b"L4:20", b"h:300", b"r3:100"]
        assert await lease(
            "L6", LeaseRequest("a", 1000, 0, 0, 0, "L4:20"), LeaseRequest("b", 9, 0, 0, 0, "")
        ) == (True, [1000 - 300 - 100, 9], [0, 0])
        assert sorted(await _members(process, "a")) == [b"h:300", b"r3:100"]


class TestLeases:
    async def test_most_requests_are_admitted_without_a_round_trip(self, processes: list[Process]):
        process = processes[0]
        key = _key([{"metric": "requests", "period": "day", "max": 10_000}])
        await _seed(process, key)
        for _ in range(200):
            assert await process.call(key, 10, 10, 5) == 15
        # Each renewal takes the request and 16 more like it.
        assert process.calls == {"lease": 12, "reserve": 0}
        [counter] = _counters(key)
        assert await process.store.read([counter]) == [200]

    async def test_two_processes_never_overrun_a_shared_cap(self, processes: list[Process]):
        cap = 40_000  # 600 requests use about twice that; far from the cap, leases take spare
        key = _key([{"metric": "tokens", "period": "month", "max": cap}])
        await _seed(processes[0], key)
        rng = random.Random(7)
        calls = []
        for n in range(600):
            max_output = rng.randrange(50, 300)
            output = rng.randrange(1, max_output + 1)
            calls.append(processes[n % 2].call(key, 50, max_output, output))
        results = await asyncio.gather(*calls)
        used = [tokens for tokens in results if tokens is not None]
        assert None in results
        assert len(used) > 100
        assert sum(used) <= cap
        [counter] = _counters(key)
        assert await processes[0].store.read([counter]) == [sum(used)]
        # Refusals under a burst depend on what is in flight. Once nothing is, no room is
        # stranded in either process's lease: requests, clamped to what is left, are admitted
        # until less than the smallest request (a prompt of 50 and 1 output token) is left.
        refused = 0
        for n in range(1000):
            tokens = await processes[n % 2].call(key, 50, 300, 300)
            if tokens is None:
                refused += 1
                if refused == 2:
                    break
            else:
                refused = 0
                used.append(tokens)
        assert refused == 2
        assert cap - 50 <= sum(used) <= cap
        assert await processes[0].store.read([counter]) == [sum(used)]
        # Closing gives every lease back: nothing is held any more.
        for process in processes:
            await process.budget.close()
        assert await _members(processes[0], counter) == []

    async def test_a_burst_on_two_processes_admits_exactly_the_cap(self, processes: list[Process]):
        # Near the cap a request is held on its own, and released with its settlement in one
        # step. Held in its process's lease, it stayed counted twice (in the counter and the
        # lease) until that process's next renewal: the other process refused meanwhile, and
        # the burst admitted 8 or 9.
        key = _key([{"metric": "requests", "period": "day", "max": 10}])
        await _seed(processes[0], key)
        for round_ in range(3):
            results = await asyncio.gather(
                *(processes[n % 2].call(key, 10, 10, 5) for n in range(30))
            )
            admitted = sum(result is not None for result in results)
            assert admitted == (10 if round_ == 0 else 0), (round_, admitted)
        [counter] = _counters(key)
        assert await processes[0].store.read([counter]) == [10]

    async def test_an_idle_lease_is_given_back_to_other_processes(
        self, processes: list[Process], monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setattr(budget, "LEASE_SECONDS", 0.2)
        first, second = processes
        key = _key([{"metric": "requests", "period": "day", "max": 100}])
        await _seed(first, key)
        [counter] = _counters(key)
        assert await first.call(key, 10, 10, 5) == 15
        # The first process's lease: its request and 16 more.
        [member] = await _members(first, counter)
        assert member.endswith(b":17")
        probe = [HoldRequest(counter, 100, 99)]
        assert await second.store.reserve("probe", probe, 2**50, 60) == (False, [100 - 1 - 17])
        await asyncio.sleep(0.6)  # no request renews it: the sweeper gives its room back
        assert await _members(first, counter) == []
        assert await second.store.reserve("probe", probe, 2**50, 60) == (True, [99])

    async def test_a_changed_counter_is_seen_at_the_next_renewal(self, processes: list[Process]):
        process = processes[0]
        key = _key([{"metric": "requests", "period": "day", "max": 100}])
        await _seed(process, key)
        [counter] = _counters(key)
        assert await process.call(key, 10, 10, 5) == 15
        await process.redis.set(f"{process.store._prefix}{counter}", 100)  # spent elsewhere
        assert await process.call(key, 10, 10, 5) == 15  # the lease still admits
        await process.budget.limits_changed(key.id)  # what a PATCH of the key does
        await _seed(process, key)
        await process.redis.set(f"{process.store._prefix}{counter}", 100)
        assert await process.call(key, 10, 10, 5) is None

    async def test_a_lost_renewal_strands_its_room_and_never_overruns(
        self, processes: list[Process]
    ):
        """The renewal ran in Redis but its answer was lost: the process forgets its lease
        (whatever Redis holds for it expires like a dead process's holds)."""
        process = processes[0]
        key = _key([{"metric": "requests", "period": "day", "max": 100}])
        await _seed(process, key)
        [counter] = _counters(key)
        lease = process.store.lease
        failures = iter([True])

        async def answer_lost(*args: Any, **kwargs: Any) -> Any:
            result = await lease(*args, **kwargs)
            if next(failures, False):
                raise ConnectionError("connection lost")
            return result

        process.store.lease = answer_lost  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await process.call(key, 1, 1, 1)
        admitted = [await process.call(key, 1, 1, 1) for _ in range(120)]
        # The stranded member (the request and 16 more) is not the process's any more.
        assert sum(tokens is not None for tokens in admitted) == 100 - 17
        assert await process.store.read([counter]) == [100 - 17]

    async def test_a_request_that_never_settles_is_held_until_its_deadline(
        self, processes: list[Process], monkeypatch: pytest.MonkeyPatch
    ):
        monkeypatch.setattr(budget, "HOLD_SECONDS", 0.3)
        monkeypatch.setattr(budget, "LEASE_SECONDS", 0.1)
        process = processes[0]
        key = _key([{"metric": "requests", "period": "day", "max": 100}])
        await _seed(process, key)
        [counter] = _counters(key)
        await process.budget.reserve(key, (), lambda: Demand(1, 1, PRICE))  # then it died
        await asyncio.sleep(0.15)
        [member] = await _members(process, counter)
        assert member.endswith(b":1")  # the lease is back to the request it still holds
        await asyncio.sleep(0.4)
        assert await _members(process, counter) == []
