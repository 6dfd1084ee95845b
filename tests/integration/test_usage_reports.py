"""`/v1/usage`, `/v1/usage/export`, `/v1/logs` and `/metrics` over real traffic."""

from __future__ import annotations

import csv
import io
import time
import tracemalloc
import uuid
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.db import create_sessionmaker
from api.kit.time import isoformat, utcnow
from api.usage.ledger import UsageRecord, write_rows
from api.usage.rollups import insert_events
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros, usage_when_settled
from tests.fakes.upstream import FakeUpstream

GPT_4O = ("2.50", "1.25", "10.00")
DEEPSEEK = ("0.28", "0.028", "0.42")


async def _chat(http: httpx.AsyncClient, secret: str, model: str, stream: bool = False) -> None:
    response = await http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": HELLO, "stream": stream},
        headers=bearer(secret),
    )
    assert response.status_code == 200, response.text


class TestUsage:
    async def test_totals_equal_reported_usage_times_price(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        alice = await create_key(http, tenant, name="alice")
        bob = await create_key(http, tenant, name="bob")
        await _chat(http, alice["secret"], "gpt-4o")
        await _chat(http, alice["secret"], "gpt-4o", stream=True)
        await _chat(http, bob["secret"], "deepseek-reasoner", stream=True)
        await _chat(http, bob["secret"], "deepseek-chat")
        usage = await usage_when_settled(http, tenant, 4, group_by="model")

        alice_cost = expected_cost_micros(2417, 2304, 1093, GPT_4O) + expected_cost_micros(
            19, 0, 10, GPT_4O
        )
        bob_cost = expected_cost_micros(18, 0, 254, DEEPSEEK) + expected_cost_micros(
            1854, 1792, 96, DEEPSEEK
        )
        by_key = {row["key_name"]: row for row in usage["by_key"]}
        assert by_key["alice"]["cost_micros"] == alice_cost
        assert by_key["bob"]["cost_micros"] == bob_cost
        assert by_key["alice"]["requests"] == by_key["bob"]["requests"] == 2
        assert usage["totals"]["cost_micros"] == alice_cost + bob_cost
        assert usage["totals"]["cost_usd"] == (alice_cost + bob_cost) / 1_000_000
        assert usage["totals"]["input_tokens"] == 2417 + 19 + 18 + 1854
        by_model = {row["model"]: row["requests"] for row in usage["by_model"]}
        assert by_model == {"gpt-4o": 2, "deepseek-reasoner": 1, "deepseek-chat": 1}

        by_day = (
            await http.get("/v1/usage", params={"group_by": "day"}, headers=tenant.headers)
        ).json()["by_day"]
        assert by_day == [{**by_day[0], "day": utcnow().strftime("%Y-%m-%d"), "requests": 4}]

        only_alice = (
            await http.get("/v1/usage", params={"key_id": alice["id"]}, headers=tenant.headers)
        ).json()
        assert only_alice["totals"]["cost_micros"] == alice_cost

    async def test_standard_key_sees_only_itself(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        alice = await create_key(http, tenant, name="alice")
        bob = await create_key(http, tenant, name="bob")
        await _chat(http, alice["secret"], "gpt-4o")
        await _chat(http, bob["secret"], "gpt-4o")
        await usage_when_settled(http, tenant, 2)
        own = (await http.get("/v1/usage", headers=bearer(alice["secret"]))).json()
        assert [row["key_name"] for row in own["by_key"]] == ["alice"]
        assert own["totals"]["requests"] == 1
        other = await http.get(
            "/v1/usage", params={"key_id": bob["id"]}, headers=bearer(alice["secret"])
        )
        assert other.status_code == 404
        logs = (await http.get("/v1/logs", headers=bearer(alice["secret"]))).json()["data"]
        assert {log["key_id"] for log in logs} == {alice["id"]}
        export = await http.get("/v1/usage/export", headers=bearer(alice["secret"]))
        assert {row["key_name"] for row in csv.DictReader(io.StringIO(export.text))} == {"alice"}

    async def test_another_tenant_sees_nothing(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        await _chat(http, key["secret"], "gpt-4o")
        await usage_when_settled(http, tenant, 1)
        stranger = await create_tenant(http, "stranger")
        usage = (await http.get("/v1/usage", headers=stranger.headers)).json()
        assert usage["totals"]["requests"] == 0
        assert usage["by_key"] == []
        assert (await http.get("/v1/logs", headers=stranger.headers)).json()["data"] == []
        spying = await http.get("/v1/usage", params={"key_id": key["id"]}, headers=stranger.headers)
        assert spying.json()["totals"]["requests"] == 0

    async def test_bad_parameters(self, http: httpx.AsyncClient):
        tenant = await create_tenant(http)
        cases = [
            ({"group_by": "week"}, "group_by"),
            ({"start": "yesterday"}, "start"),
            ({"start": "2026-01-01T00:00:00"}, "start"),
            ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ]
        for params, param in cases:
            response = await http.get("/v1/usage", params=params, headers=tenant.headers)
            assert response.status_code == 400, params
            assert response.json()["error"]["param"] == param
        assert (
            await http.get("/v1/usage/export", params={"format": "xlsx"}, headers=tenant.headers)
        ).status_code == 400


class TestExport:
    async def test_columns_and_rows(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, name="alice")
        await _chat(http, key["secret"], "gpt-4o")
        await usage_when_settled(http, tenant, 1)
        response = await http.get("/v1/usage/export?format=csv", headers=tenant.headers)
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(response.text)))
        assert rows[0] == [
            "id", "key_id", "key_name", "model", "provider", "input_tokens", "cached_input_tokens",
            "output_tokens", "cost_micros", "latency_ms", "status", "created_at", "tool_calls",
            "audio_seconds", "characters", "images", "cache", "saved_tokens", "saved_micros",
        ]  # fmt: skip
        row = dict(zip(rows[0], rows[1], strict=True))
        assert (row["key_name"], row["model"], row["provider"]) == ("alice", "gpt-4o", "openai")
        assert row["cost_micros"] == str(expected_cost_micros(2417, 2304, 1093, GPT_4O))

    async def test_formula_text_is_neutralised_and_numbers_stay_numbers(
        self, http: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, name='=HYPERLINK("http://evil")')
        models = ["+1+1", "-2+3", "@SUM(A1)", "\tx", "gpt-4o"]
        template = {
            "request_id": "req_csv", "tenant_id": uuid.UUID(tenant.id),
            "key_id": uuid.UUID(key["id"]), "endpoint": "/v1/chat/completions",
            "provider": "openai", "status": 200, "input_tokens": 100, "output_tokens": 50,
        }  # fmt: skip
        start = utcnow() - timedelta(minutes=1)
        events = [
            # A compensating row: a negative amount is a number, not a formula.
            {**template, "id": uuid.uuid4(), "model": model, "cost_micros": -45 if i else 45,
             "created_at": start + timedelta(seconds=i)}
            for i, model in enumerate(models)
        ]  # fmt: skip
        async with AsyncSession(engine) as session, session.begin():
            await insert_events(session, events)
        response = await http.get("/v1/usage/export?format=csv", headers=tenant.headers)
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [row["model"] for row in rows] == ["'+1+1", "'-2+3", "'@SUM(A1)", "'\tx", "gpt-4o"]
        assert {row["key_name"] for row in rows} == {'\'=HYPERLINK("http://evil")'}
        assert [row["cost_micros"] for row in rows] == ["45", "-45", "-45", "-45", "-45"]
        assert {row["input_tokens"] for row in rows} == {"100"}
        assert rows[0]["created_at"][0].isdigit()

    async def test_hundred_thousand_rows_stream_in_bounded_memory(
        self, http: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        rows = 100_000
        start = utcnow() - timedelta(hours=1)
        template = {
            "request_id": "req_bulk", "tenant_id": uuid.UUID(tenant.id),
            "key_id": uuid.UUID(key["id"]), "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini", "provider": "openai", "status": 200, "input_tokens": 100,
            "output_tokens": 50, "cost_micros": 45,
        }  # fmt: skip
        async with AsyncSession(engine) as session, session.begin():
            for offset in range(0, rows, 10_000):
                await insert_events(
                    session,
                    [
                        {
                            **template,
                            "id": uuid.uuid4(),
                            "created_at": start + timedelta(microseconds=i),
                        }
                        for i in range(offset, offset + 10_000)
                    ],
                )
        tracemalloc.start()
        try:
            started = time.monotonic()
            received, lines = 0, 0
            async with http.stream("GET", "/v1/usage/export", headers=tenant.headers) as response:
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    lines += chunk.count(b"\n")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - started
        assert lines == rows + 1
        # The file is ~15 MB; holding it (or 100k ORM rows) would need far more than this.
        assert received > 10_000_000
        assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB for {received / 1e6:.1f} MB streamed"
        summary = f"{rows} rows, {received / 1e6:.1f} MB, {elapsed:.1f} s, peak {peak / 1e6:.1f} MB"
        print(f"export: {summary}")  # noqa: T201 - the measurement, for the CI log


class TestUnitQuantities:
    async def test_report_export_and_logs_carry_audio_characters_and_images(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ):
        """Per-unit use (SPEC §5.12), written as the ledger writes it, in every view of usage."""
        tenant = await create_tenant(client)
        alice = await create_key(client, tenant, name="alice")
        bob = await create_key(client, tenant, name="bob")
        now = utcnow()

        def record(key: dict[str, Any], seconds_ago: int, **fields: Any) -> UsageRecord:
            return UsageRecord(
                request_id=f"req_{uuid.uuid4().hex[:8]}", tenant_id=uuid.UUID(tenant.id),
                key_id=uuid.UUID(key["id"]), provider="openai", status=200,
                created_at=now - timedelta(seconds=seconds_ago), **fields,
            )  # fmt: skip

        records = [
            record(alice, 50, endpoint="/v1/audio/transcriptions", model="whisper-1",
                   audio_seconds=61, cost_micros=6_100),
            record(alice, 40, endpoint="/v1/audio/speech", model="tts-1", characters=420,
                   cost_micros=6_300),
            record(bob, 30, endpoint="/v1/images/generations", model="dall-e-3", images=2,
                   cost_micros=80_000),
            record(bob, 20, endpoint="/v1/chat/completions", model="gpt-4o", input_tokens=10,
                   output_tokens=5, cost_micros=75),
        ]  # fmt: skip
        sessionmaker = create_sessionmaker(engine)
        assert await write_rows(sessionmaker, [asdict(r) for r in records]) == []
        assert await write_rows(sessionmaker, [asdict(records[0])]) == []  # a replay
        window = {
            "start": isoformat(now - timedelta(hours=1)),
            "end": isoformat(now + timedelta(minutes=1)),
        }
        units = ("audio_seconds", "characters", "images")

        usage = (
            await client.get(
                "/v1/usage", params={**window, "group_by": "model"}, headers=tenant.headers
            )
        ).json()
        by_key = {row["key_name"]: tuple(row[name] for name in units) for row in usage["by_key"]}
        assert by_key == {"alice": (61, 420, 0), "bob": (0, 0, 2)}
        assert tuple(usage["totals"][name] for name in units) == (61, 420, 2)
        assert usage["totals"]["requests"] == 4
        assert usage["totals"]["cost_micros"] == 6_100 + 6_300 + 80_000 + 75
        by_model = {row["model"]: tuple(row[name] for name in units) for row in usage["by_model"]}
        assert by_model == {
            "whisper-1": (61, 0, 0), "tts-1": (0, 420, 0), "dall-e-3": (0, 0, 2),
            "gpt-4o": (0, 0, 0),
        }  # fmt: skip
        by_day = (
            await client.get(
                "/v1/usage", params={**window, "group_by": "day"}, headers=tenant.headers
            )
        ).json()["by_day"]
        assert sum(row["images"] for row in by_day) == 2
        assert sum(row["audio_seconds"] for row in by_day) == 61
        mine = (
            await client.get("/v1/usage", params=window, headers=bearer(alice["secret"]))
        ).json()
        assert tuple(mine["totals"][name] for name in units) == (61, 420, 0)

        export = await client.get("/v1/usage/export", params=window, headers=tenant.headers)
        lines = list(csv.reader(io.StringIO(export.text)))
        assert lines[0][-6:-3] == list(units)  # then the cache's columns
        exported = {row["model"]: row for row in csv.DictReader(io.StringIO(export.text))}
        assert len(exported) == 4  # the replay is not a second row
        assert {model: tuple(row[name] for name in units) for model, row in exported.items()} == {
            "whisper-1": ("61", "0", "0"), "tts-1": ("0", "420", "0"),
            "dall-e-3": ("0", "0", "2"), "gpt-4o": ("0", "0", "0"),
        }  # fmt: skip
        assert exported["dall-e-3"]["cost_micros"] == "80000"

        logs = (await client.get("/v1/logs", headers=tenant.headers)).json()["data"]
        logged = {log["model"]: tuple(log[name] for name in units) for log in logs}
        assert logged == {
            "whisper-1": (61, 0, 0), "tts-1": (0, 420, 0), "dall-e-3": (0, 0, 2),
            "gpt-4o": (0, 0, 0),
        }  # fmt: skip


class TestLogsAndMetrics:
    async def test_logs_page_newest_first(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        for _ in range(3):
            await _chat(http, key["secret"], "gpt-4o")
        await usage_when_settled(http, tenant, 3)
        first = (await http.get("/v1/logs?limit=2", headers=tenant.headers)).json()
        assert first["has_more"] is True
        second = (
            await http.get(
                f"/v1/logs?limit=2&cursor={first['next_cursor']}", headers=tenant.headers
            )
        ).json()
        entries = first["data"] + second["data"]
        assert len({entry["id"] for entry in entries}) == 3
        stamps = [entry["created_at"] for entry in entries]
        assert stamps == sorted(stamps, reverse=True)
        assert entries[0]["object"] == "log"
        assert entries[0]["request_id"].startswith("req_")

    async def test_metrics_count_requests_tokens_and_spend(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        await _chat(http, key["secret"], "gpt-4o")
        await _chat(http, key["secret"], "gpt-4o", stream=True)
        text = (await http.get("/metrics", headers=bearer(ADMIN_TOKEN))).text
        assert (
            'tollgate_requests_total{endpoint="/v1/chat/completions",model="gpt-4o",'
            'provider="openai",status="200"} 2.0'
        ) in text
        assert 'tollgate_tokens_total{kind="input",model="gpt-4o",provider="openai"} 2436.0' in text
        assert "tollgate_time_to_first_byte_seconds_count" in text
        assert "tollgate_in_flight_requests" in text
