"""A dashboard page costs a few queries, whatever the tenant's size: no query per key or per
row, and the usage page reads the rollups rather than the request log (SPEC §5.13)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_sessionmaker
from api.kit.time import month_start, utcnow
from api.settings import Settings
from api.usage.ledger import UsageRecord, write_rows
from tests.dashboard import dashboard_client, sign_in
from tests.factories.tenants import TenantFixture, create_key, create_tenant

PAGES = [
    "/dashboard/keys", "/dashboard/usage", "/dashboard/usage?period=last_month",
    "/dashboard/logs", "/dashboard/threads", "/dashboard/tools", "/dashboard/jobs",
    "/dashboard/billing", "/dashboard/providers", "/dashboard/settings", "/dashboard/search",
]  # fmt: skip
MOST = 12  # statements a page may run, the session's and key's reads included


@contextlib.contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL this task runs meanwhile: the request's (the ASGI transport serves it in the
    caller's task), not the background sweeps' that share the engine."""
    seen: list[str] = []
    owner = asyncio.current_task()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if asyncio.current_task() is owner:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def _grow(
    client: httpx.AsyncClient, engine: AsyncEngine, tenant: TenantFixture, keys: int
) -> None:
    """`keys` more keys, each with a request this month and one last month."""
    now = utcnow()
    records = []
    for index in range(keys):
        key = await create_key(client, tenant, name=f"user-{index}", max_spend_usd=5)
        for at in (month_start(now) + timedelta(minutes=1), month_start(now) - timedelta(days=3)):
            record = UsageRecord(
                request_id=f"req_{uuid.uuid4().hex[:12]}", tenant_id=uuid.UUID(tenant.id),
                key_id=uuid.UUID(key["id"]), created_at=at, endpoint="/v1/chat/completions",
                model=f"gpt-4o-{index % 3}", provider="openai", status=200, input_tokens=10,
                output_tokens=5, cost_micros=1_000 + index,
            )  # fmt: skip
            records.append(record)
    assert await write_rows(create_sessionmaker(engine), [asdict(r) for r in records]) == []


async def _counts(client: httpx.AsyncClient) -> dict[str, list[str]]:
    found = {}
    for path in PAGES:
        with statements() as seen:
            response = await client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        found[path] = list(seen)
    return found


class TestQueriesPerPage:
    async def test_a_page_runs_the_same_few_queries_for_three_keys_or_thirty(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            await _grow(client, engine, tenant, 3)
            small = await _counts(client)
            await _grow(client, engine, tenant, 27)
            large = await _counts(client)
        for path in PAGES:
            assert any("FROM dashboard_sessions" in sql for sql in small[path]), path  # counted
            assert len(small[path]) <= MOST, (path, small[path])
            differs = sorted(set(large[path]) ^ set(small[path]))
            assert len(large[path]) == len(small[path]), (path, differs)

    async def test_the_usage_page_reads_the_log_only_at_the_ragged_edges(
        self, settings: Settings, engine: AsyncEngine
    ):
        """Last month is whole months and days of rollups: not one row of the log is read."""
        async with dashboard_client(settings) as client:
            tenant = await create_tenant(client)
            await sign_in(client, tenant.master_key)
            await _grow(client, engine, tenant, 5)
            with statements() as seen:
                response = await client.get("/dashboard/usage?period=last_month")
            assert response.status_code == 200
        log_reads = [s for s in seen if re.search(r"\bFROM usage_events\b", s)]
        assert log_reads == []
