"""The usage rollups against real databases: every read through them equals the same sums taken
naively over the events (tokens, the per-unit quantities and cost), replays change nothing,
concurrent writers add up, and the migration's backfill sums the events recorded before it."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
from api.usage.ledger import UsageRecord, write_rows
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
UNITS = ("audio_seconds", "characters", "images")  # per-unit quantities (SPEC §5.12)
# Columns added after the rollups: an event of that time has none of them.
LATER = (*UNITS, "cache", "cache_hits", "saved_tokens", "saved_micros")


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
    # A transcription, speech or an image call now and then (a failure can be billed too).
    units = dict.fromkeys(UNITS, 0)
    if billed and rng.random() < 0.3:
        units[rng.choice(UNITS)] = rng.randrange(1, 5000)
    # A response cache hit now and then: what it saved (SPEC §5.10).
    hit = status < 400 and rng.random() < 0.2
    cached = {
        "cache": "exact" if hit else None, "cache_hits": int(hit),
        "saved_tokens": rng.randrange(1, 9000) if hit else 0,
        "saved_micros": rng.randrange(1, 90_000) if hit else 0,
    }  # fmt: skip
    return {
        "id": uuid.uuid4(), "request_id": f"req-{rng.randrange(10**9)}",
        "tenant_id": tenant_id, "key_id": key_id, "endpoint": "/v1/chat/completions",
        "model": rng.choice(MODELS), "provider": "openai", "status": status,
        "input_tokens": input_tokens,
        "cached_input_tokens": rng.randrange(0, input_tokens + 1) if input_tokens else 0,
        "output_tokens": output_tokens, **units, **cached,
        "cost_micros": (
            rng.randrange(1, 90_000) if input_tokens + output_tokens or any(units.values()) else 0
        ),
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
        **{name: row[name] for name in UNITS},
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


def _events_before_units() -> sa.Table:
    """`usage_events` as it was before the per-unit quantities and the cache's columns: the
    model's columns less those (an insert through the model's table would fill them in with
    their defaults)."""
    columns = [
        sa.Column(
            column.name,
            column.type,
            default=(
                column.default.arg
                if column.default is not None and not callable(column.default.arg)
                else None
            ),
        )
        for column in UsageEvent.__table__.columns
        if column.name not in LATER
    ]
    return sa.Table("usage_events", sa.MetaData(), *columns)


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
        for event in events:  # recorded before the per-unit quantities existed
            event.update(dict.fromkeys(LATER, 0), cache=None)
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
            table = _events_before_units()
            rows = [{name: event[name] for name in event if name in table.c} for event in events]
            connection.execute(sa.insert(table), rows)
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


class TestUnitQuantities:
    """Seconds of audio, characters of speech and images (SPEC §5.12), written as the ledger
    writes usage records, are summed like tokens: into every rollup, the caps' totals and the
    reports, once however often an event is replayed."""

    async def test_ledger_records_reach_rollups_totals_and_reports_once(self, engine: AsyncEngine):
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            owners = await _owners(session)
        alice, bob = list(owners.keys)[:2]

        def record(key_id: uuid.UUID, at: datetime, **fields: Any) -> UsageRecord:
            tenant_id = owners.other_tenant if key_id == owners.other_key else owners.tenant
            defaults = {"endpoint": "/v1/chat/completions", "model": "gpt-4o", "status": 200}
            return UsageRecord(
                request_id=f"req-{uuid.uuid4().hex[:8]}", tenant_id=tenant_id, key_id=key_id,
                provider="openai", created_at=at, **{**defaults, **fields},
            )  # fmt: skip

        hearing = BASE + timedelta(hours=1, minutes=20)
        records = [
            record(alice, hearing, endpoint="/v1/audio/transcriptions", model="whisper-1",
                   audio_seconds=95, cost_micros=9_500),
            record(alice, BASE + timedelta(days=1, hours=3), endpoint="/v1/audio/speech",
                   model="tts-1", characters=1_200, cost_micros=18_000),
            record(bob, BASE + timedelta(days=2, minutes=5), endpoint="/v1/images/generations",
                   model="dall-e-3", images=3, cost_micros=120_000),
            record(bob, BASE + timedelta(days=2, hours=1), input_tokens=100, output_tokens=50,
                   cost_micros=450),
            record(bob, BASE + timedelta(days=2, hours=2), endpoint="/v1/images/generations",
                   model="dall-e-3", status=502),  # failed: nothing billed
            record(owners.other_key, BASE + timedelta(days=1), endpoint="/v1/images/edits",
                   model="dall-e-2", images=7, cost_micros=140_000),
        ]  # fmt: skip
        rows = [asdict(r) for r in records]
        assert await write_rows(sessionmaker, rows) == []
        stored = await _rollup_rows(engine)
        assert _stored_rollups(stored) == _naive_rollups(rows)
        month = datetime(2026, 2, 1, tzinfo=UTC)
        sums = _stored_rollups(stored)
        assert sums[(UsageRollup, alice, "m", month, "whisper-1")]["audio_seconds"] == 95
        assert sums[(UsageKeyRollup, alice, "m", month, None)]["characters"] == 1_200
        march = datetime(2026, 3, 1, tzinfo=UTC)
        assert sums[(UsageTenantRollup, owners.tenant, "m", march, "dall-e-3")]["images"] == 3
        hour = hearing.replace(minute=0)
        assert sums[(UsageKeyRollup, alice, "h", hour, None)]["audio_seconds"] == 95

        # Replayed, alone and beside a new record: only the new record counts.
        assert await write_rows(sessionmaker, rows[:3]) == []
        assert await _rollup_rows(engine) == stored
        more = record(alice, BASE + timedelta(days=3), endpoint="/v1/audio/transcriptions",
                      model="whisper-1", audio_seconds=5, cost_micros=500)  # fmt: skip
        rows.append(asdict(more))
        assert await write_rows(sessionmaker, [rows[0], rows[-1], rows[0]]) == []
        assert _stored_rollups(await _rollup_rows(engine)) == _naive_rollups(rows)
        async with engine.connect() as connection:
            count = select(sa.func.count()).select_from(UsageEvent)
            assert await connection.scalar(count) == len(rows)

        async with sessionmaker() as session:
            expected_alice = KeyTotals(
                requests=3, tokens=0, cost_micros=28_000, audio_seconds=100, characters=1_200
            )
            assert await key_totals(session, owners.tenant, alice, None) == expected_alice
            assert await key_totals_unscoped(session, alice, None) == expected_alice
            # Since a moment after the transcription (a ragged edge read from the log).
            since = hearing + timedelta(seconds=1)
            assert await key_totals(session, owners.tenant, alice, since) == KeyTotals(
                requests=2, tokens=0, cost_micros=18_500, audio_seconds=5, characters=1_200
            )
            assert await key_totals_unscoped(session, bob, None) == KeyTotals(
                requests=2, tokens=150, cost_micros=120_450, images=3
            )
            assert await tenant_totals(session, owners.tenant, None) == KeyTotals(
                requests=5, tokens=150, cost_micros=148_450, audio_seconds=100,
                characters=1_200, images=3,
            )  # fmt: skip
            assert await tenant_totals(session, owners.other_tenant, None) == KeyTotals(
                requests=1, tokens=0, cost_micros=140_000, images=7
            )
            # The other tenant's images are not this tenant's.
            nothing = KeyTotals(requests=0, tokens=0, cost_micros=0)
            assert await key_totals(session, owners.tenant, owners.other_key, None) == nothing

            repository = UsageRepository(session, owners.tenant)
            where = UsageFilter(BASE, BASE + SPREAD)
            by_key = {row["key_id"]: row for row in await repository.grouped(where, "key")}
            assert {
                key: (row["audio_seconds"], row["characters"], row["images"])
                for key, row in by_key.items()
            } == {alice: (100, 1_200, 0), bob: (0, 0, 3)}
            by_model = {row["model"]: row for row in await repository.grouped(where, "model")}
            assert by_model["whisper-1"]["audio_seconds"] == 100
            assert by_model["tts-1"]["characters"] == 1_200
            assert (by_model["dall-e-3"]["images"], by_model["dall-e-3"]["requests"]) == (3, 2)
            by_day = await repository.grouped(where, "day")
            assert [(row["day"], row["images"]) for row in by_day if row["images"]] == [
                ("2026-03-01", 3)
            ]
            for group in ("key", "model", "day"):
                assert await repository.grouped(where, group) == _expected_grouped(
                    rows, owners, where, group
                )
