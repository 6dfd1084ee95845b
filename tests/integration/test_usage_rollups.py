"""The usage rollups against real databases: every read through them equals the same sums taken
naively over the events, replays change nothing, concurrent writers add up, and the migration's
backfill sums the events recorded before it."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.auth.models import ApiKey
from api.db import create_engine, create_sessionmaker
from api.migrate import alembic_config
from api.tenant.models import Tenant
from api.usage.models import UsageEvent, UsageKeyRollup, UsageRollup, UsageTenantRollup
from api.usage.repository import (
    SUM_COLUMNS,
    KeyTotals,
    UsageFilter,
    UsageRepository,
    key_totals,
    key_totals_unscoped,
    tenant_totals,
)
from api.usage.rollups import insert_events

BASE = datetime(2026, 2, 27, tzinfo=UTC)  # five days across the end of February
SPREAD = timedelta(days=5)
DAY = timedelta(days=1)
MODELS = ("gpt-4o", "deepseek-chat", "claude-sonnet-4")
STATUSES = (200, 200, 200, 400, 429, 502)
BEFORE_ROLLUPS = "b7c3e9a1d5f2"


@dataclass
class Owners:
    tenant: uuid.UUID
    keys: dict[uuid.UUID, str]  # id → name
    other_tenant: uuid.UUID
    other_key: uuid.UUID


# Events and naive sums


def _moment(rng: random.Random) -> datetime:
    moment = BASE + timedelta(microseconds=rng.randrange(int(SPREAD.total_seconds() * 10**6)))
    shape = rng.random()
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if shape < 0.1:
        return hour  # exactly on a whole hour
    if shape < 0.15:
        return hour.replace(hour=0)  # exactly on a whole day
    if shape < 0.25:
        return hour - timedelta(microseconds=1)  # the last microsecond of an hour
    if shape < 0.3:
        return hour.replace(hour=0) - timedelta(microseconds=1)  # … of a day
    return moment


def _event(rng: random.Random, tenant_id: uuid.UUID, key_id: uuid.UUID) -> dict[str, Any]:
    status = rng.choice(STATUSES)
    billed = status < 400 or rng.random() < 0.3  # a failure can be billed (a cut-off stream)
    input_tokens = rng.randrange(0, 5000) if billed and rng.random() < 0.9 else 0
    output_tokens = rng.randrange(0, 2000) if billed and rng.random() < 0.9 else 0
    return {
        "id": uuid.uuid4(), "request_id": f"req-{rng.randrange(10**9)}",
        "tenant_id": tenant_id, "key_id": key_id, "endpoint": "/v1/chat/completions",
        "model": rng.choice(MODELS), "provider": "openai", "status": status,
        "input_tokens": input_tokens,
        "cached_input_tokens": rng.randrange(0, input_tokens + 1) if input_tokens else 0,
        "output_tokens": output_tokens,
        "cost_micros": rng.randrange(1, 90_000) if input_tokens + output_tokens else 0,
        "created_at": _moment(rng),
    }  # fmt: skip


def _events(rng: random.Random, owners: Owners, count: int) -> list[dict[str, Any]]:
    keys = [(owners.tenant, key) for key in owners.keys] + [(owners.other_tenant, owners.other_key)]
    return [_event(rng, *rng.choice(keys)) for _ in range(count)]


def _zero() -> dict[str, int]:
    return dict.fromkeys(("requests", "failed", "reached", *SUM_COLUMNS[2:]), 0)


def _add(sums: dict[str, int], event: dict[str, Any]) -> None:
    sums["requests"] += 1
    sums["failed"] += event["status"] >= 400
    sums["reached"] += event["status"] < 400 or event["input_tokens"] + event["output_tokens"] > 0
    for name in SUM_COLUMNS[2:]:
        sums[name] += event[name]


def _naive(
    events: Iterable[dict[str, Any]],
    start: datetime | None,
    end: datetime | None,
    by: Any = lambda _event: None,
    **match: Any,
) -> dict[Any, dict[str, int]]:
    out: dict[Any, dict[str, int]] = defaultdict(_zero)
    for event in events:
        if start is not None and event["created_at"] < start:
            continue
        if end is not None and event["created_at"] >= end:
            continue
        if any(value is not None and event[name] != value for name, value in match.items()):
            continue
        _add(out[by(event)], event)
    return dict(out)


def _expected_grouped(
    events: list[dict[str, Any]], owners: Owners, where: UsageFilter, group: str
) -> list[dict[str, Any]]:
    by = {
        "key": lambda event: event["key_id"],
        "model": lambda event: event["model"],
        "day": lambda event: event["created_at"].astimezone(UTC).strftime("%Y-%m-%d"),
    }[group]
    sums = _naive(
        events, where.start, where.end, by,
        tenant_id=owners.tenant, key_id=where.key_id, model=where.model,
    )  # fmt: skip
    rows = []
    for value in sorted(sums):
        head = (
            {"key_id": value, "key_name": owners.keys[value]} if group == "key" else {group: value}
        )
        rows.append({**head, **{name: sums[value][name] for name in SUM_COLUMNS}})
    return rows


def _totals(sums: dict[Any, dict[str, int]]) -> KeyTotals:
    row = sums.get(None, _zero())
    return KeyTotals(
        requests=row["reached"],
        tokens=row["input_tokens"] + row["output_tokens"],
        cost_micros=row["cost_micros"],
    )


# Database helpers


async def _owners(session: AsyncSession) -> Owners:
    tenant, other = Tenant(name="Acme"), Tenant(name="Other")
    session.add_all([tenant, other])
    await session.flush()
    keys = [_key(tenant.id, f"key-{n}") for n in range(3)]
    other_key = _key(other.id, "other")
    session.add_all([*keys, other_key])
    await session.flush()
    return Owners(tenant.id, {key.id: key.name for key in keys}, other.id, other_key.id)


def _key(tenant_id: uuid.UUID, name: str) -> ApiKey:
    return ApiKey(
        tenant_id=tenant_id, name=name, scope="standard", prefix="tg_test", last_four="abcd"
    )


# Each rollup table, and what its rows are per: (owner column, by model).
TABLES = {
    UsageRollup: ("key_id", True),
    UsageKeyRollup: ("key_id", False),
    UsageTenantRollup: ("tenant_id", True),
}


async def _rollup_rows(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """Every rollup table's rows, each tagged with its table."""
    async with engine.connect() as connection:
        rows = []
        for table in TABLES:
            statement = select(table.__table__).order_by(*table.__table__.primary_key)
            rows += [(table, *row) for row in await connection.execute(statement)]
        return rows


def _naive_rollups(events: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, int]]:
    """The rows the rollups must hold: (table, key or tenant id, span, bucket, model or None)
    → sums."""
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(_zero)
    for event in events:
        hour = event["created_at"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        day = hour.replace(hour=0)
        for span, bucket in (("h", hour), ("d", day), ("m", day.replace(day=1))):
            for table, (owner, by_model) in TABLES.items():
                model = event["model"] if by_model else None
                _add(out[(table, event[owner], span, bucket, model)], event)
    return dict(out)


def _stored_rollups(rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, int]]:
    out = {}
    for table, *row in rows:
        names = [column.name for column in table.__table__.columns]
        values = dict(zip(names, row, strict=True))
        owner = values[TABLES[table][0]]
        key = (table, owner, values["span"], values["bucket"], values.get("model"))
        out[key] = {name: int(values[name]) for name in _zero()}
    return out


async def _insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> int:
    async with create_sessionmaker(engine)() as session, session.begin():
        return await insert_events(session, rows)


def _random_range(rng: random.Random, events: list[dict[str, Any]]) -> tuple[datetime, datetime]:
    def moment() -> datetime:
        shape = rng.random()
        if shape < 0.3:  # exactly an event's time: [start, end) must include / exclude it
            at: datetime = rng.choice(events)["created_at"]
            return at
        if shape < 0.5:
            return _moment(rng)  # whole hours and days, and a microsecond before them
        return BASE - DAY + timedelta(microseconds=rng.randrange(7 * 86400 * 10**6))

    start = moment()
    shape = rng.random()
    if shape < 0.05:
        return start, start
    if shape < 0.4:  # within a few hours: log edges and hourly rollups
        return start, start + timedelta(microseconds=rng.randrange(1, 30 * 3600 * 10**6))
    end = moment()
    return (start, end) if start <= end else (end, start)


# Tests


class TestSums:
    async def test_reads_through_rollups_equal_naive_sums(self, engine: AsyncEngine):
        rng = random.Random(20261122)
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            owners = await _owners(session)
        events = _events(rng, owners, 3000)
        position = 0
        while position < len(events):  # batches of varied sizes, one transaction each
            size = rng.randrange(1, 700)
            batch = events[position : position + size]
            assert await _insert(engine, batch) == len(batch)
            position += size
        rollups = await _rollup_rows(engine)
        assert _stored_rollups(rollups) == _naive_rollups(events)

        # Replays: in batches of their own, shuffled, some twice in one batch: nothing changes.
        replays = rng.sample(events, 400)
        replays += rng.sample(replays, 50)
        rng.shuffle(replays)
        assert await _insert(engine, replays[:200]) == 0
        assert await _insert(engine, replays[200:]) == 0
        assert await _rollup_rows(engine) == rollups
        # Replays mixed with new events: only the new ones count.
        fresh = _events(rng, owners, 200)
        mixed = rng.sample(events, 200) + fresh
        rng.shuffle(mixed)
        assert await _insert(engine, mixed) == len(fresh)
        events += fresh
        assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups(events)

        async with sessionmaker() as session:
            repository = UsageRepository(session, owners.tenant)
            other = UsageRepository(session, owners.other_tenant)
            key_ids = list(owners.keys)
            for _ in range(60):
                start, end = _random_range(rng, events)
                key_id = rng.choice([None, None, *key_ids, owners.other_key])
                model = rng.choice([None, None, *MODELS])
                where = UsageFilter(start, end, key_id=key_id, model=model)
                for group in ("key", "model", "day"):
                    got = await repository.grouped(where, group)
                    assert got == _expected_grouped(events, owners, where, group), (where, group)
                    if group == "key":
                        assert owners.other_key not in {row["key_id"] for row in got}
                spend = _naive(
                    events, start, end, lambda event: event["key_id"], tenant_id=owners.tenant
                )
                expected_spend = {
                    key: sums["cost_micros"] for key, sums in spend.items() if sums["cost_micros"]
                }
                assert await repository.spend_by_key(start, end) == expected_spend
                # The other tenant sees its own key only.
                theirs = await other.grouped(UsageFilter(start, end), "key")
                assert {row["key_id"] for row in theirs} <= {owners.other_key}

            for since in [None, BASE - DAY, BASE, BASE + 5 * DAY, BASE + 9 * DAY] + [
                _random_range(rng, events)[0] for _ in range(40)
            ]:
                for key_id in key_ids:
                    expected = _totals(_naive(events, since, None, key_id=key_id))
                    assert await key_totals(session, owners.tenant, key_id, since) == expected
                    assert await key_totals_unscoped(session, key_id, since) == expected
                other_key = _totals(_naive(events, since, None, key_id=owners.other_key))
                assert await key_totals_unscoped(session, owners.other_key, since) == other_key
                # Another tenant's key, asked for under this tenant: nothing.
                nothing = KeyTotals(requests=0, tokens=0, cost_micros=0)
                assert await key_totals(session, owners.tenant, owners.other_key, since) == nothing
                assert await tenant_totals(session, owners.tenant, since) == _totals(
                    _naive(events, since, None, tenant_id=owners.tenant)
                )
                assert await tenant_totals(session, owners.other_tenant, since) == other_key

    async def test_a_batch_holding_one_new_event_twice_counts_it_once(self, engine: AsyncEngine):
        rng = random.Random(5)
        async with create_sessionmaker(engine)() as session, session.begin():
            owners = await _owners(session)
        event = _event(rng, owners.tenant, next(iter(owners.keys)))
        assert await _insert(engine, [event, dict(event)]) == 1
        assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups([event])


class TestConcurrentWriters:
    async def test_writers_adding_to_the_same_rollups_both_count(self, engine: AsyncEngine):
        """One writer holds the rollup rows (not yet committed) while the other adds to them."""
        rng = random.Random(11)
        async with create_sessionmaker(engine)() as session, session.begin():
            owners = await _owners(session)
        key_id = next(iter(owners.keys))
        hour = BASE + timedelta(hours=13)

        def batch() -> list[dict[str, Any]]:
            rows = [_event(rng, owners.tenant, key_id) for _ in range(50)]
            for row in rows:  # same key, model and hour
                row["model"] = MODELS[0]
                row["created_at"] = hour + timedelta(microseconds=rng.randrange(3600 * 10**6))
            return rows

        first, second = batch(), batch()
        first_added = asyncio.Event()

        async def slow_writer() -> int:
            async with create_sessionmaker(engine)() as session, session.begin():
                count = await insert_events(session, first)
                first_added.set()
                await asyncio.sleep(0.3)  # the other writer now waits on these rows
                return count

        async def other_writer() -> int:
            await first_added.wait()
            return await _insert(engine, second)

        assert await asyncio.gather(slow_writer(), other_writer()) == [50, 50]
        assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups(first + second)

    async def test_many_writers_over_the_same_rows_in_any_order(self, engine: AsyncEngine):
        """Writers whose batches touch the same rollup rows in different orders all commit."""
        rng = random.Random(12)
        async with create_sessionmaker(engine)() as session, session.begin():
            owners = await _owners(session)
        key_ids = list(owners.keys)[:2]
        batches = []
        for _ in range(6):
            rows = [_event(rng, owners.tenant, rng.choice(key_ids)) for _ in range(120)]
            for row in rows:
                row["created_at"] = BASE + timedelta(
                    hours=rng.randrange(3), microseconds=rng.randrange(3600 * 10**6)
                )
            rng.shuffle(rows)
            batches.append(rows)
        counts = await asyncio.gather(*(_insert(engine, rows) for rows in batches))
        assert counts == [120] * 6
        everything = [row for rows in batches for row in rows]
        assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups(everything)


class TestBackfill:
    @pytest.fixture(params=["postgres", "sqlite"])
    def fresh_url(self, request: pytest.FixtureRequest, tmp_path, service_urls) -> str:
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
        admin_url = service_urls["TOLLGATE_TEST_POSTGRES_URL"]
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text('DROP DATABASE IF EXISTS "rollup_backfill" WITH (FORCE)'))
            connection.execute(sa.text('CREATE DATABASE "rollup_backfill"'))
        engine.dispose()
        return admin_url.rsplit("/", 1)[0] + "/rollup_backfill"

    def test_backfill_sums_the_events_already_recorded(self, fresh_url: str):
        config = alembic_config(fresh_url)
        command.upgrade(config, BEFORE_ROLLUPS)
        rng = random.Random(3)
        tenant, other = uuid.uuid4(), uuid.uuid4()
        keys = {uuid.uuid4(): f"key-{n}" for n in range(3)}
        owners = Owners(tenant, keys, other, uuid.uuid4())
        events = _events(rng, owners, 1500)
        sync = sa.create_engine(fresh_url.replace("sqlite+aiosqlite", "sqlite"))
        with sync.begin() as connection:  # as the application wrote events before rollups
            connection.execute(
                sa.insert(Tenant.__table__),
                [{"id": tenant, "name": "A"}, {"id": other, "name": "B"}],
            )
            connection.execute(
                sa.insert(ApiKey.__table__),
                [
                    {"id": key, "tenant_id": tenant_id, "name": "k", "scope": "standard",
                     "prefix": "tg_test", "last_four": "abcd"}
                    for key, tenant_id in [*((key, tenant) for key in keys),
                                           (owners.other_key, other)]
                ],
            )  # fmt: skip
            connection.execute(sa.insert(UsageEvent.__table__), events)
        sync.dispose()

        command.upgrade(config, "head")

        async def check() -> None:
            engine = create_engine(fresh_url)
            try:
                assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups(events)
                # The backfilled buckets are the ones the application writes: new events in
                # the same hours add to the same rows instead of making new ones.
                rows_before = len(await _rollup_rows(engine))
                again = []
                for event in rng.sample(events, 300):
                    copy = _event(rng, event["tenant_id"], event["key_id"])
                    again.append(
                        {**copy, "model": event["model"], "created_at": event["created_at"]}
                    )
                assert await _insert(engine, again) == len(again)
                rows = await _rollup_rows(engine)
                assert len(rows) == rows_before
                assert _stored_rollups(rows) == _naive_rollups(events + again)
            finally:
                await engine.dispose()

        asyncio.run(check())
