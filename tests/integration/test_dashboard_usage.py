"""The dashboard's usage page, its CSV, and the request-log pages over usage written as the
ledger writes it: exact figures per period, key and model, attempts and failovers, and one
tenant never reaching another's requests."""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import create_sessionmaker
from api.kit.time import isoformat, month_start, utcnow
from api.settings import Settings
from api.usage.ledger import UsageRecord, write_rows
from tests.dashboard import dashboard_client, sign_in
from tests.factories.tenants import TenantFixture, create_key, create_tenant

ATTEMPTS = [
    {"provider": "anthropic", "model": "claude-sonnet-4", "account": "main", "status": 529,
     "reason": "overloaded", "ms": 120},
    {"provider": "openai", "model": "gpt-4o", "account": "backup", "status": 200,
     "reason": None, "ms": 800},
]  # fmt: skip


def _record(tenant: TenantFixture, key: dict[str, Any], at: datetime, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {"endpoint": "/v1/chat/completions", "model": "gpt-4o",
                              "provider": "openai", "status": 200, **fields}  # fmt: skip
    return UsageRecord(
        request_id=f"req_{uuid.uuid4().hex[:12]}", tenant_id=uuid.UUID(tenant.id),
        key_id=uuid.UUID(key["id"]), created_at=at, **values,
    )  # fmt: skip


async def _write(engine: AsyncEngine, records: list[UsageRecord]) -> None:
    assert await write_rows(create_sessionmaker(engine), [asdict(r) for r in records]) == []


def _last_month() -> datetime:
    return month_start(month_start(utcnow()) - timedelta(days=1))


async def _seed_last_month(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> tuple[TenantFixture, dict[str, Any], dict[str, Any]]:
    """Last month: alice spends $1.25 + $0.03 on its 2nd, bob $2.00 and a cache hit on its 3rd;
    this month: one $0.50 request of alice's."""
    tenant = await create_tenant(client)
    alice = await create_key(client, tenant, name="alice")
    bob = await create_key(client, tenant, name="bob")
    first = _last_month()
    await _write(
        engine,
        [
            _record(tenant, alice, first + timedelta(days=1, hours=10), input_tokens=1000,
                    output_tokens=200, cost_micros=1_250_000),
            _record(tenant, alice, first + timedelta(days=1, hours=11), model="gpt-4o-mini",
                    input_tokens=500, output_tokens=100, cost_micros=30_000),
            _record(tenant, bob, first + timedelta(days=2, hours=9), input_tokens=3000,
                    output_tokens=400, cost_micros=2_000_000),
            _record(tenant, bob, first + timedelta(days=2, hours=10), cache="exact",
                    cache_hits=1, saved_tokens=3400, saved_micros=2_000_000),
            _record(tenant, alice, month_start(utcnow()), input_tokens=10, output_tokens=5,
                    cost_micros=500_000),
        ],
    )  # fmt: skip
    return tenant, alice, bob


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def _total(page: str, name: str) -> str:
    found = re.search(rf'<dd class="total-{name}">(.*?)</dd>', page)
    assert found is not None, f"no total {name}"
    return _text(found.group(1))


def _row(page: str, attribute: str) -> list[str]:
    """The cells of the table row carrying `attribute` (e.g. `data-day="2026-01-02"`)."""
    found = re.search(rf"<tr {re.escape(attribute)}>(.*?)</tr>", page, re.S)
    assert found is not None, f"no row {attribute}"
    return [_text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", found.group(1), re.S)]


def _bar_height(page: str, day: str) -> int:
    found = re.search(rf'<rect class="bar" [^>]*height="(\d+)" data-day="{day}"', page)
    assert found is not None, f"no bar for {day}"
    return int(found.group(1))


class TestUsagePage:
    async def test_totals_and_spend_per_day(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, _, _ = await _seed_last_month(client, engine)
            await sign_in(client, tenant.master_key)
            response = await client.get("/dashboard/usage", params={"period": "last_month"})
            assert response.status_code == 200, response.text
            page = response.text
            assert _total(page, "spend") == "$3.28"
            assert _total(page, "requests") == "4"
            assert _total(page, "tokens") == "5,200 (4,500 in, 700 out)"
            assert _total(page, "cache-hits") == "1"
            assert _total(page, "saved") == "$2.00 (3,400 tokens)"
            first = _last_month()
            second, third = ((first + timedelta(days=n)).date().isoformat() for n in (1, 2))
            assert _row(page, f'data-day="{second}"') == [second, "$1.28", "2", "1,500", "300"]
            assert _row(page, f'data-day="{third}"') == [third, "$2.00", "2", "3,000", "400"]
            assert _row(page, f'data-day="{first.date().isoformat()}"')[1:3] == ["$0.00", "0"]
            # Every day of the month has a row and a bar; the tallest day fills the chart.
            assert page.count('<rect class="bar"') == page.count("<tr data-day=")
            assert page.count("<tr data-day=") == (month_start(utcnow()) - first).days
            assert (_bar_height(page, third), _bar_height(page, second)) == (160, 102)
            assert 'role="img"' in page
            assert "$3.28 in all, $2.00 on the highest day" in page
            assert _row(page, 'data-model="gpt-4o"')[:3] == ["gpt-4o", "$3.25", "3"]
            assert _row(page, 'data-model="gpt-4o-mini"') == ["gpt-4o-mini", "$0.03", "1", "600"]
            keys = re.findall(r'<tr data-key-id="[^"]+"><th scope="row"><a [^>]+>(\w+)<', page)
            assert keys == ["bob", "alice"]  # by spend
            assert "1 of 4 requests were answered from the cache" in page

    async def test_this_month_is_the_default(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, _, _ = await _seed_last_month(client, engine)
            await sign_in(client, tenant.master_key)
            page = (await client.get("/dashboard/usage")).text
            assert (_total(page, "spend"), _total(page, "requests")) == ("$0.50", "1")
            today = month_start(utcnow()).date().isoformat()
            assert _row(page, f'data-day="{today}"')[1:3] == ["$0.50", "1"]
            assert '<option value="month" selected>' in page

    async def test_key_and_model_filters_change_the_figures(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with dashboard_client(settings) as client:
            tenant, alice, bob = await _seed_last_month(client, engine)
            await sign_in(client, tenant.master_key)
            period = {"period": "last_month"}
            page = (
                await client.get("/dashboard/usage", params={**period, "key_id": alice["id"]})
            ).text
            assert (_total(page, "spend"), _total(page, "requests")) == ("$1.28", "2")
            assert f'<option value="{alice["id"]}" selected>alice</option>' in page
            third = (_last_month() + timedelta(days=2)).date().isoformat()
            assert _row(page, f'data-day="{third}"')[1:3] == ["$0.00", "0"]
            page = (await client.get("/dashboard/usage", params={**period, "model": "gpt-4o"})).text
            assert (_total(page, "spend"), _total(page, "requests")) == ("$3.25", "3")
            both = {**period, "key_id": bob["id"], "model": "gpt-4o-mini"}
            page = (await client.get("/dashboard/usage", params=both)).text
            assert (_total(page, "spend"), _total(page, "requests")) == ("$0.00", "0")
            assert "No requests in this period." in page

    async def test_csv_is_the_apis_export(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, alice, _ = await _seed_last_month(client, engine)
            await sign_in(client, tenant.master_key)
            first = _last_month()
            window = {"start": isoformat(first), "end": isoformat(month_start(utcnow()))}
            cases = [
                ({"period": "last_month"}, window),
                (
                    {"period": "last_month", "key_id": alice["id"]},
                    {**window, "key_id": alice["id"]},
                ),
                ({"period": "last_month", "model": "gpt-4o"}, {**window, "model": "gpt-4o"}),
            ]
            for ours, theirs in cases:
                mine = await client.get("/dashboard/usage/export.csv", params=ours)
                api = await client.get("/v1/usage/export", params=theirs, headers=tenant.headers)
                assert mine.status_code == api.status_code == 200
                assert mine.content == api.content, ours
                for name in ("content-type", "content-disposition"):
                    assert mine.headers[name] == api.headers[name]
            lines = mine.content.decode().splitlines()
            assert len(lines) == 1 + 3  # the header and gpt-4o's three requests
            default = await client.get("/dashboard/usage/export.csv")
            api = await client.get("/v1/usage/export", headers=tenant.headers)
            assert default.content == api.content
            assert len(default.content.decode().splitlines()) == 2
            usage = (await client.get("/dashboard/usage", params={"key_id": alice["id"]})).text
            link = f"/dashboard/usage/export.csv?period=month&amp;key_id={alice['id']}"
            assert f'href="{link}"' in usage

    async def test_bad_filters_are_error_pages(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, _, _ = await _seed_last_month(client, engine)
            await sign_in(client, tenant.master_key)
            cases = [
                ("/dashboard/usage", {"period": "year"}, 400, "period: one of"),
                ("/dashboard/usage", {"key_id": "not-a-key"}, 404, "No key with id not-a-key."),
                ("/dashboard/usage", {"model": "m" * 201}, 400, "at most 200"),
                ("/dashboard/usage/export.csv", {"period": "week"}, 400, "period: one of"),
                (
                    "/dashboard/usage/export.csv",
                    {"key_id": "<b>x"},
                    404,
                    "No key with id &lt;b&gt;x.",
                ),
                ("/dashboard/logs", {"key_id": "nope"}, 404, "No key with id nope."),
                ("/dashboard/logs", {"cursor": "garbage!"}, 400, "The cursor is not valid."),
            ]
            for path, params, status, message in cases:
                response = await client.get(path, params=params)
                assert response.status_code == status, (path, params, response.text)
                assert response.headers["content-type"].startswith("text/html")
                assert message in response.text

    async def test_another_tenants_key_shows_nothing_of_it(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with dashboard_client(settings) as client:
            _, alice, _ = await _seed_last_month(client, engine)
            stranger = await create_tenant(client, "stranger")
            await sign_in(client, stranger.master_key)
            params = {"period": "last_month", "key_id": alice["id"]}
            page = (await client.get("/dashboard/usage", params=params)).text
            assert (_total(page, "spend"), _total(page, "requests")) == ("$0.00", "0")
            assert "alice" not in page
            export = await client.get("/dashboard/usage/export.csv", params=params)
            assert export.content.decode().splitlines()[1:] == []


async def _seed_log(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> tuple[TenantFixture, dict[str, Any], list[UsageRecord]]:
    """Three recent requests of bob's: a plain one, a failover with its trace, a failure."""
    tenant = await create_tenant(client)
    bob = await create_key(client, tenant, name="bob")
    at = utcnow() - timedelta(minutes=10)
    attempts = orjson.dumps(ATTEMPTS).decode()
    steps = orjson.dumps([{"name": "auth", "start_ms": 0.2, "duration_ms": 1.5}]).decode()
    records = [
        _record(tenant, bob, at, model="gpt-4o-mini", input_tokens=40, output_tokens=2,
                cost_micros=18, latency_ms=310, attempts=1, account="primary"),
        _record(tenant, bob, at + timedelta(seconds=1), input_tokens=1000, output_tokens=200,
                cost_micros=4_500, latency_ms=950, attempts=2, account="backup",
                failover_from="anthropic/claude-sonnet-4", trace=attempts,
                trace_id="checkout-42", steps=steps, trace_attempts=attempts),
        _record(tenant, bob, at + timedelta(seconds=2), status=429, latency_ms=5,
                error_code="rate_limit_exceeded"),
    ]  # fmt: skip
    await _write(engine, records)
    return tenant, bob, records


class TestRequestLog:
    async def test_newest_first_with_every_column(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, _, records = await _seed_log(client, engine)
            await sign_in(client, tenant.master_key)
            response = await client.get("/dashboard/logs")
            assert response.status_code == 200, response.text
            page = response.text
            ids = re.findall(r'<tr data-log-id="([^"]+)">', page)
            assert ids == [str(r.id) for r in reversed(records)]
            failover = _row(page, f'data-log-id="{records[1].id}"')
            assert failover[1:] == [
                "bob", "/v1/chat/completions", "gpt-4o", "openai", "200", "1,200", "$0.0045",
                "950 ms",
            ]  # fmt: skip
            assert _row(page, f'data-log-id="{records[2].id}"')[5] == "429 rate_limit_exceeded"
            assert f'href="/dashboard/logs/{records[1].id}"' in page
            assert ">Older<" not in page

    async def test_filters_and_older_pages(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            tenant, bob, records = await _seed_log(client, engine)
            carol = await create_key(client, tenant, name="carol")
            at = utcnow() - timedelta(hours=1)
            more = [
                _record(tenant, carol, at + timedelta(seconds=n), model="gpt-4.1", cost_micros=n)
                for n in range(51)
            ]
            await _write(engine, more)
            await sign_in(client, tenant.master_key)
            page = (await client.get("/dashboard/logs", params={"key_id": bob["id"]})).text
            assert re.findall(r'<tr data-log-id="([^"]+)">', page) == [
                str(r.id) for r in reversed(records)
            ]
            page = (await client.get("/dashboard/logs", params={"model": "gpt-4o-mini"})).text
            assert re.findall(r'<tr data-log-id="([^"]+)">', page) == [str(records[0].id)]
            page = (await client.get("/dashboard/logs", params={"key_id": carol["id"]})).text
            listed = re.findall(r'<tr data-log-id="([^"]+)">', page)
            assert listed == [str(r.id) for r in reversed(more)][:50]
            older = re.search(r'<a href="(/dashboard/logs\?[^"]+)" rel="next">Older</a>', page)
            assert older is not None
            assert f"key_id={carol['id']}" in older.group(1)
            page = (await client.get(html.unescape(older.group(1)))).text
            assert re.findall(r'<tr data-log-id="([^"]+)">', page) == [str(more[0].id)]
            assert ">Older<" not in page

    async def test_one_request_shows_attempts_account_failover_and_cost(
        self, settings: Settings, engine: AsyncEngine
    ):
        async with dashboard_client(settings) as client:
            tenant, bob, records = await _seed_log(client, engine)
            await sign_in(client, tenant.master_key)
            response = await client.get(f"/dashboard/logs/{records[1].id}")
            assert response.status_code == 200, response.text
            page = response.text
            assert records[1].request_id in page
            assert '<dd class="account">backup</dd>' in page
            assert '<dd class="failover">anthropic/claude-sonnet-4</dd>' in page
            assert '<dd class="cost">$0.0045</dd>' in page
            attempts = re.search(r'<table class="attempts">(.*?)</table>', page, re.S)
            assert attempts is not None
            rows = re.findall(r"<tr><td>(.*?)</tr>", attempts.group(1), re.S)
            cells = [[_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", "<td>" + row)]
                     for row in rows]  # fmt: skip
            assert cells == [
                ["1", "anthropic", "claude-sonnet-4", "main", "529", "overloaded", "120 ms"],
                ["2", "openai", "gpt-4o", "backup", "200", "—", "800 ms"],
            ]
            assert '<a href="#trace">checkout-42</a>' in page
            assert "GET /v1/traces/checkout-42" in page
            assert f'href="/dashboard/keys/{bob["id"]}">bob</a>' in page

            failed = (await client.get(f"/dashboard/logs/{records[2].id}")).text
            assert '<dd class="error-code"><code>rate_limit_exceeded</code></dd>' in failed
            assert "not kept" in failed

    async def test_another_tenants_request_is_a_404(self, settings: Settings, engine: AsyncEngine):
        async with dashboard_client(settings) as client:
            _, _, records = await _seed_log(client, engine)
            stranger = await create_tenant(client, "stranger")
            await sign_in(client, stranger.master_key)
            for event_id in (str(records[1].id), "not-an-id", str(uuid.uuid4())):
                response = await client.get(f"/dashboard/logs/{event_id}")
                assert response.status_code == 404, event_id
                assert response.headers["content-type"].startswith("text/html")
                assert records[1].request_id not in response.text
                assert "backup" not in response.text
                assert "checkout-42" not in response.text
            listing = (await client.get("/dashboard/logs")).text
            assert "data-log-id" not in listing
            assert "No requests." in listing

    async def test_pages_need_a_session(self, settings: Settings):
        async with dashboard_client(settings) as client:
            for path in ("/dashboard/usage", "/dashboard/usage/export.csv", "/dashboard/logs",
                         f"/dashboard/logs/{uuid.uuid4()}"):  # fmt: skip
                response = await client.get(path)
                assert response.status_code == 303
                assert response.headers["location"].startswith("/dashboard/login?next=")
