"""The ledger's Redis path: the drain, its dead letters, a consumer that died, Redis outages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_sessionmaker
from api.kit.counters import RedisCounterStore, Settlement
from api.usage.ledger import (
    STREAM,
    LedgerDrain,
    RedisLedger,
    UsageRecord,
    encode,
    write_rows,
)
from api.usage.models import UsageEvent
from tests.factories.tenants import create_key, create_tenant
from tools.testenv import free_port

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.delete(STREAM, f"{STREAM}:dead")
    yield client
    await client.delete(STREAM, f"{STREAM}:dead")
    await client.aclose()


async def _owner(client: httpx.AsyncClient) -> tuple[uuid.UUID, uuid.UUID]:
    tenant = await create_tenant(client)
    key = await create_key(client, tenant)
    return uuid.UUID(tenant.id), uuid.UUID(key["id"])


def _event(tenant_id: uuid.UUID, key_id: uuid.UUID, cost: int = 5) -> UsageRecord:
    return UsageRecord(
        request_id=f"r-{uuid.uuid4().hex[:8]}", tenant_id=tenant_id, key_id=key_id,
        endpoint="/v1/chat/completions", model="gpt-4o", provider="openai", status=200,
        cost_micros=cost,
    )  # fmt: skip


async def _count(engine: AsyncEngine, key_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(UsageEvent).where(UsageEvent.key_id == key_id)
        return int(await connection.scalar(query) or 0)


class TestDrain:
    async def test_refused_and_unreadable_entries_go_to_dead_letters(
        self, client: httpx.AsyncClient, engine: AsyncEngine, redis: Redis
    ):
        tenant_id, key_id = await _owner(client)
        good = [_event(tenant_id, key_id) for _ in range(3)]
        orphan = _event(tenant_id, uuid.uuid4())  # names no key: the database refuses it
        for event in (good[0], orphan, good[1]):
            await redis.xadd(STREAM, {"e": encode(event)})
        await redis.xadd(STREAM, {"e": b"{not json"})
        await redis.xadd(STREAM, {"e": encode(good[2])})
        drain = LedgerDrain(redis, create_sessionmaker(engine), consumer="test-drain")
        await drain.until_empty()
        assert await redis.xlen(STREAM) == 0
        assert await _count(engine, key_id) == 3
        assert drain.drained == 3
        dead = await redis.xrange(f"{STREAM}:dead")
        assert len(dead) == 2
        assert str(orphan.id).encode() in dead[0][1][b"e"] + dead[1][1][b"e"]

    async def test_entries_a_dead_consumer_read_are_taken_over_once(
        self, client: httpx.AsyncClient, engine: AsyncEngine, redis: Redis
    ):
        tenant_id, key_id = await _owner(client)
        sessionmaker = create_sessionmaker(engine)
        dead = LedgerDrain(redis, sessionmaker, consumer="dead-consumer")
        await dead.until_empty()  # creates the group
        events = [_event(tenant_id, key_id) for _ in range(4)]
        for event in events:
            await redis.xadd(STREAM, {"e": encode(event)})
        # The dead consumer read them and died before writing: they sit in its pending list.
        await redis.xreadgroup(LedgerDrain.GROUP, "dead-consumer", {STREAM: ">"}, count=10)
        # Another process wrote two of them already (a crash after the insert, before the ack).
        await write_rows(sessionmaker, [_row(events[0]), _row(events[1])])
        await LedgerDrain(redis, sessionmaker, consumer="alive").until_empty()
        assert await redis.xlen(STREAM) == 0
        assert await _count(engine, key_id) == 4
        pending = await redis.xpending(STREAM, LedgerDrain.GROUP)
        assert pending["pending"] == 0


def _row(event: UsageRecord) -> dict[str, object]:
    return asdict(event)


class TestRedisOutage:
    async def test_events_fall_back_to_the_database_and_counters_are_recounted(
        self, client: httpx.AsyncClient, engine: AsyncEngine, redis: Redis
    ):
        tenant_id, key_id = await _owner(client)
        sessionmaker = create_sessionmaker(engine)
        down = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
        counter = f"key:{key_id}:t:spend_usd"
        await RedisCounterStore(redis).seed(counter, 100, 600)
        ledger = RedisLedger(
            down, RedisCounterStore(down), sessionmaker, LedgerDrain(redis, sessionmaker, "x")
        )
        ledger.start()
        settlement = Settlement(counter=counter, member="h:10", actual=7, ttl_seconds=600)
        after = await ledger.commit(_event(tenant_id, key_id, cost=7), [settlement])
        assert after == [None]
        assert await _count(engine, key_id) == 1  # durable although Redis was down
        # Redis is back: the next commit drops the counter it could not move, to be recounted.
        ledger._counters = RedisCounterStore(redis)  # the same server, now reachable
        await ledger.commit(_event(tenant_id, key_id, cost=3), [])
        assert await RedisCounterStore(redis).read([counter]) == [None]
        await ledger.close()
        await down.aclose()
