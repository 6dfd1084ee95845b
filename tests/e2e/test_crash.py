"""The ledger survives crashes (SPEC §7): SIGKILL the API in the middle of 100 requests, or the
worker in the middle of a drain; after a restart every completed request has exactly one usage
event, nothing is counted twice, and the cap counters agree with the ledger."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis import Redis

from api.auth.models import ApiKey
from api.db import create_engine, create_sessionmaker
from api.kit.time import utcnow
from api.tenant.models import Tenant
from api.usage.ledger import STREAM, UsageRecord, encode
from tests.conftest import ADMIN_TOKEN, SECRET_KEY, truncate_all
from tests.e2e.processes import start, stop, tollgate_env, wait_healthy
from tests.fakes.upstream import FakeUpstream
from tools.testenv import free_port

pytestmark = pytest.mark.usefixtures("clean_ledger_stream")

REQUESTS = 100
_KILL_AFTER = 30


@pytest.fixture
def clean_ledger_stream(redis_url: str) -> None:
    with Redis.from_url(redis_url) as redis:
        redis.delete(STREAM)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    yield postgres_url
    truncate_all(postgres_url)


def _sync(url: str) -> str:
    return url.replace("sqlite+aiosqlite", "sqlite")


class Stack:
    """`tollgate serve` (and `tollgate worker`) against the given backends and fake upstream."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = tollgate_env(tmp_path / "data", TOLLGATE_PORT=str(self.port), **env)
        self.log = tmp_path / "tollgate.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None

    def start_api(self) -> None:
        self.api = start(["serve"], self.env, self.log)
        wait_healthy(self.base_url, self.api, self.log)

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait(10)


@pytest.fixture(params=["postgres+redis", "embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, upstream: FakeUpstream
) -> Iterator[tuple[Stack, str]]:
    env = {
        "TOLLGATE_SECRET_KEY": SECRET_KEY,
        "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOLLGATE_OPENAI_API_KEY": "sk-operator",
        "TOLLGATE_OPENAI_BASE_URL": upstream.openai_base_url,
        "TOLLGATE_LOG_LEVEL": "warning",
    }
    if request.param == "postgres+redis":
        database_url = request.getfixturevalue("postgres_db")
        env |= {"TOLLGATE_DATABASE_URL": database_url, "TOLLGATE_REDIS_URL": redis_url}
    else:
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'tollgate.db'}"
    stack = Stack(tmp_path, env)
    try:
        yield stack, database_url
    finally:
        if stack.api is not None:
            stop(stack.api)


async def _one(
    http: httpx.AsyncClient, secret: str, index: int, done: list[str], enough: asyncio.Event
) -> tuple[str, bool]:
    """Send request `index` after a stagger; returns its id and whether its response completed."""
    request_id = f"crash-{index:03d}"
    stream = index % 2 == 0
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {secret}", "x-request-id": request_id}
    await asyncio.sleep(index * 0.012)
    try:
        if stream:
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=headers
            ) as response:
                lines = [line async for line in response.aiter_lines()]
            complete = response.status_code == 200 and lines[-2:] == ["data: [DONE]", ""]
            complete = complete or (response.status_code == 200 and "data: [DONE]" in lines)
        else:
            response = await http.post("/v1/chat/completions", json=body, headers=headers)
            complete = (
                response.status_code == 200 and response.json()["object"] == "chat.completion"
            )
    except httpx.HTTPError:
        complete = False
    if complete:
        done.append(request_id)
        if len(done) >= _KILL_AFTER:
            enough.set()
    return request_id, complete


async def _storm(stack: Stack, secret: str) -> set[str]:
    """100 concurrent requests; SIGKILL the API once `_KILL_AFTER` of them have completed."""
    done: list[str] = []
    enough = asyncio.Event()
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        tasks = [asyncio.create_task(_one(http, secret, i, done, enough)) for i in range(REQUESTS)]
        await asyncio.wait_for(enough.wait(), 30)
        stack.kill_api()
        results = await asyncio.gather(*tasks)
    return {request_id for request_id, complete in results if complete}


def _events(database_url: str) -> list[tuple[str, int, int]]:
    engine = sa.create_engine(_sync(database_url))
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT request_id, status, cost_micros FROM usage_events")
        ).all()
    engine.dispose()
    return [(row[0], row[1], row[2]) for row in rows]


def _setup_tenant(base_url: str) -> tuple[str, str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = httpx.post(f"{base_url}/admin/tenants", json={"name": "Crash"}, headers=admin).json()
    master = {"Authorization": f"Bearer {tenant['master_key']}"}
    key = httpx.post(
        f"{base_url}/v1/keys", json={"name": "user", "max_spend_usd": 100}, headers=master
    ).json()
    return tenant["master_key"], key["id"], key["secret"]


def _wait_for(check: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def _tenant_and_key(database_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    engine = create_engine(database_url)
    async with create_sessionmaker(engine)() as session, session.begin():
        tenant = Tenant(name="w")
        session.add(tenant)
        await session.flush()
        key = ApiKey(tenant_id=tenant.id, name="k", scope="standard", prefix="x", last_four="abcd")
        session.add(key)
        await session.flush()
        ids = tenant.id, key.id
    await engine.dispose()
    return ids


class TestApiCrash:
    def test_sigkill_mid_storm_loses_nothing_and_doubles_nothing(
        self, stack: tuple[Stack, str], upstream: FakeUpstream, redis_url: str
    ):
        stack_, database_url = stack
        # Each answer takes about 0.5 s (20 words, 25 ms apart), streamed or not.
        upstream.mode, upstream.chunk_delay, upstream.words = "generate", 0.025, 20
        stack_.start_api()
        master, key_id, secret = _setup_tenant(stack_.base_url)

        completed = asyncio.run(_storm(stack_, secret))
        assert _KILL_AFTER <= len(completed) < REQUESTS, (
            "the kill must land in the middle of the storm"
        )

        stack_.start_api()  # a restart drains what the dead process left in the stream
        redis_backed = "TOLLGATE_REDIS_URL" in stack_.env
        if redis_backed:
            with Redis.from_url(redis_url) as redis:
                _wait_for(lambda: redis.xlen(STREAM) == 0, "the ledger stream to drain")

        events = _events(database_url)
        by_request: dict[str, list[tuple[int, int]]] = {}
        for request_id, status, cost in events:
            by_request.setdefault(request_id, []).append((status, cost))
        doubled = {rid: rows for rid, rows in by_request.items() if len(rows) > 1}
        assert doubled == {}
        missing = sorted(rid for rid in completed if rid not in by_request)
        assert missing == []
        assert all(by_request[rid][0] == (200, by_request[rid][0][1]) for rid in completed)
        assert all(by_request[rid][0][1] > 0 for rid in completed)

        # The key's spend as the caps see it equals the ledger's sum.
        ledger_spend = sum(cost for _, _, cost in events)
        shown = httpx.get(
            f"{stack_.base_url}/v1/keys/{key_id}",
            headers={"Authorization": f"Bearer {master}"},
        ).json()
        assert shown["spend_micros"] == ledger_spend
        if redis_backed:
            now = utcnow()
            counter = f"tollgate:key:{key_id}:m{now.year:04d}{now.month:02d}:spend_usd"
            with Redis.from_url(redis_url) as redis:
                assert int(redis.get(counter) or -1) == ledger_spend


class TestWorkerCrash:
    def test_sigkill_mid_drain_loses_and_doubles_nothing(
        self, tmp_path: Path, postgres_db: str, redis_url: str
    ):
        env = tollgate_env(
            tmp_path,
            TOLLGATE_DATABASE_URL=postgres_db,
            TOLLGATE_REDIS_URL=redis_url,
            TOLLGATE_SECRET_KEY=SECRET_KEY,
        )
        log = tmp_path / "worker.log"
        tenant_id, key_id = asyncio.run(_tenant_and_key(postgres_db))
        engine = sa.create_engine(postgres_db)
        total = 30_000
        with Redis.from_url(redis_url) as redis:
            pipe = redis.pipeline(transaction=False)
            for index in range(total):
                event = UsageRecord(
                    request_id=f"w-{index}", tenant_id=tenant_id, key_id=key_id,
                    endpoint="/v1/chat/completions", model="gpt-4o", provider="openai",
                    status=200, cost_micros=index % 7 + 1,
                )  # fmt: skip
                pipe.xadd(STREAM, {"e": encode(event)})
            pipe.execute()

        def drained() -> int:
            with engine.connect() as connection:
                return int(connection.scalar(sa.text("SELECT count(*) FROM usage_events")) or 0)

        worker = start(["worker"], env, log)
        try:
            _wait_for(lambda: drained() > 0, "the worker to start draining")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            assert drained() < total, "the kill must land in the middle of the drain"
            worker = start(["worker"], env, log)
            with Redis.from_url(redis_url) as redis:
                _wait_for(lambda: redis.xlen(STREAM) == 0, "the restarted worker to drain")
        finally:
            stop(worker)
        with engine.connect() as connection:
            count, distinct, spend = connection.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT request_id), sum(cost_micros) "
                    "FROM usage_events"
                )
            ).one()
        engine.dispose()
        assert (count, distinct) == (total, total)
        assert spend == sum(index % 7 + 1 for index in range(total))
