"""Hard caps under concurrency: the reservation holds every request's worst case (SPEC §7)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from api.gateway import budget
from api.gateway.tokens import prompt_token_bound
from tests.factories.chat import HELLO
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros, start_of_a_minute, usage_when_settled
from tests.fakes.upstream import FakeUpstream, billed_prompt_tokens

MINI = ("0.15", "0.075", "0.60")


async def _chat(http: httpx.AsyncClient, secret: str, stream: bool, **body: object) -> int:
    payload = {"model": "gpt-4o-mini", "messages": HELLO, "stream": stream, **body}
    response = await http.post("/v1/chat/completions", json=payload, headers=bearer(secret))
    return response.status_code


class TestConcurrentCap:
    async def test_two_hundred_requests_never_overrun_a_cap_for_fifty(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 100
        prompt = billed_prompt_tokens(HELLO)
        one_request = expected_cost_micros(prompt, 0, 100, MINI)  # the fake always uses all 100
        cap_micros = 50 * one_request
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=cap_micros / 1_000_000)

        statuses = await asyncio.gather(
            *(_chat(http, key["secret"], stream=i % 2 == 0, max_tokens=100) for i in range(200))
        )
        counts = Counter(statuses)
        assert set(counts) <= {200, 402}, counts
        assert counts[200] >= 40
        usage = await usage_when_settled(http, tenant, 200)  # refusals are events too
        assert usage["totals"]["cost_micros"] <= cap_micros
        # Each forwarded request's own worst case fitted what was left when it was let through.
        billed = sum(
            expected_cost_micros(r["prompt_tokens"], 0, r["completion_tokens"], MINI)
            for r in upstream.reported
        )
        assert billed == usage["totals"]["cost_micros"]
        assert billed <= cap_micros
        assert all((seen.body.get("max_tokens") or 0) <= 100 for seen in upstream.seen)
        assert len(upstream.seen) == counts[200]
        # What the burst left is still usable, one request at a time, down to the last cent.
        sent = len(upstream.seen)
        while await _chat(http, key["secret"], stream=False, max_tokens=100) == 200:
            assert len(upstream.seen) < sent + 60
        final = await usage_when_settled(http, tenant, 201 + len(upstream.seen) - sent)
        spent = final["totals"]["cost_micros"]
        assert cap_micros - one_request < spent <= cap_micros

    async def test_clamps_max_tokens_to_what_is_left_and_says_so(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 1000
        prompt = billed_prompt_tokens(HELLO)
        cap_micros = expected_cost_micros(prompt, 0, 40, MINI)  # room for about 40 output tokens
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=cap_micros / 1_000_000)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 1000},
            headers=bearer(key["secret"]),
        )
        assert response.status_code == 200
        clamped = int(response.headers["x-tollgate-max-tokens-clamped"])
        assert upstream.seen[-1].body["max_tokens"] == clamped
        assert 30 <= clamped <= 45  # ceil rounding leaves room for a token or two more
        cost = (await usage_when_settled(http, tenant, 1))["totals"]["cost_micros"]
        assert cost <= cap_micros
        # Without max_tokens the model's own maximum is the worst case: clamped the same way.
        streamed = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": HELLO, "stream": True},
            headers=bearer(key["secret"]),
        )
        assert streamed.status_code == 402


class TestOtherLimits:
    async def test_requests_per_day(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        upstream.mode, upstream.words = "generate", 5
        tenant = await create_tenant(http)
        key = await create_key(
            http, tenant, limits=[{"metric": "requests", "period": "day", "max": 3}]
        )
        statuses = await asyncio.gather(*(_chat(http, key["secret"], False) for _ in range(6)))
        assert sorted(statuses) == [200, 200, 200, 402, 402, 402]
        assert len(upstream.seen) == 3

    async def test_tokens_per_month_clamps_then_refuses(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 1000
        prompt, bound = billed_prompt_tokens(HELLO), prompt_token_bound(HELLO)
        tenant = await create_tenant(http)
        key = await create_key(
            http, tenant, limits=[{"metric": "tokens", "period": "month", "max": bound + 25}]
        )
        assert await _chat(http, key["secret"], False, max_tokens=500) == 200
        assert upstream.seen[-1].body["max_tokens"] == 25
        assert await _chat(http, key["secret"], False) == 402
        totals = (await usage_when_settled(http, tenant, 1))["totals"]
        assert totals["input_tokens"] + totals["output_tokens"] == prompt + 25
        assert len(upstream.seen) == 1


class TestRedisHolds:
    async def test_script_semantics_match_the_embedded_store(self, redis_url: str):
        import uuid

        from redis.asyncio import Redis

        from api.kit.counters import HoldRequest, RedisCounterStore, Settlement, Unseeded

        redis = Redis.from_url(redis_url)
        store = RedisCounterStore(redis, prefix=f"test:{uuid.uuid4().hex}:")
        try:
            with pytest.raises(Unseeded):
                await store.reserve("h0", [HoldRequest("a", 10, 1)], 2**50, 60)
            assert await store.seed("a", 0, 60) == 0
            assert await store.reserve("dead", [HoldRequest("a", 10, 10)], 1, 60) == (True, [10])
            assert await store.reserve("h1", [HoldRequest("a", 10, 6)], 2**50, 60) == (True, [10])
            assert await store.reserve("h2", [HoldRequest("a", 10, 6)], 2**50, 60) == (False, [4])
            await store.release([Settlement("a", "h1:6", 3, 60)])
            assert await store.read(["a"]) == [3]
            assert await store.reserve("h3", [HoldRequest("a", 10, 7)], 2**50, 60) == (True, [7])
        finally:
            await redis.aclose()


class TestRateLimits:
    async def test_rpm_answers_429_with_headers_before_any_upstream_call(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 5
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, rpm=3, tpm=100_000)
        await start_of_a_minute()
        answers = []
        for _ in range(4):
            answers.append(
                await http.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 10},
                    headers=bearer(key["secret"]),
                )
            )
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        first, refused = answers[0], answers[3]
        assert first.headers["x-ratelimit-limit-requests"] == "3"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        assert refused.json()["error"]["code"] == "rate_limited"
        assert refused.headers["x-should-retry"] == "true"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(upstream.seen) == 3

    async def test_tpm_counts_the_prompt_and_max_tokens_up_front(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 5
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, tpm=prompt_token_bound(HELLO) + 100)
        await start_of_a_minute()
        assert await _chat(http, key["secret"], False, max_tokens=200) == 429  # never clamped
        assert await _chat(http, key["secret"], False, max_tokens=100) == 200
        assert upstream.seen[-1].body["max_tokens"] == 100
        assert len(upstream.seen) == 1


class TestTenantCap:
    async def test_a_cap_shared_by_twenty_keys_holds(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 100
        one_request = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 100, MINI)
        cap_micros = 50 * one_request
        tenant = await create_tenant(http)
        keys = [await create_key(http, tenant, name=f"user{i}") for i in range(20)]
        limit = {"metric": "spend_usd", "period": "month", "max": cap_micros / 1_000_000}
        response = await http.put("/v1/settings", json={"limits": [limit]}, headers=tenant.headers)
        assert response.status_code == 200
        assert response.json()["limits"][0]["max"] == cap_micros / 1_000_000

        statuses = await asyncio.gather(
            *(
                _chat(http, keys[i % 20]["secret"], stream=i % 3 == 0, max_tokens=100)
                for i in range(200)
            )
        )
        counts = Counter(statuses)
        assert set(counts) <= {200, 402}, counts
        assert counts[200] >= 50
        usage = await usage_when_settled(http, tenant, 200)
        assert usage["totals"]["cost_micros"] <= cap_micros
        assert len({row["key_id"] for row in usage["by_key"] if row["cost_micros"]}) > 1

    async def test_settings_change_applies_to_cached_keys_at_once(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 5
        tenant = await create_tenant(http)
        key = await create_key(http, tenant)
        assert await _chat(http, key["secret"], False, max_tokens=5) == 200  # now cached
        limit = {"metric": "requests", "period": "day", "max": 1}
        await http.put("/v1/settings", json={"limits": [limit]}, headers=tenant.headers)
        assert await _chat(http, key["secret"], False, max_tokens=5) == 402
        await http.put("/v1/settings", json={"limits": None}, headers=tenant.headers)
        assert await _chat(http, key["secret"], False, max_tokens=5) == 200


CAPS_GROUPS = ("object", "limits", "alerts", "failover", "routing")


class TestSettingsApi:
    async def test_read_validate_scope_and_isolate(self, http: httpx.AsyncClient):
        alpha = await create_tenant(http, "alpha")
        beta = await create_tenant(http, "beta")
        shown = (await http.get("/v1/settings", headers=alpha.headers)).json()
        assert {group: shown[group] for group in CAPS_GROUPS} == {
            "object": "settings",
            "limits": [],
            "alerts": {"webhook_url": None, "emails": [], "signing_secret_set": False},
            "failover": {"enabled": False},
            "routing": {"strategy": "default"},
        }
        assert shown["shield"]["enabled"] is False  # the other groups have tests of their own
        limit = {"metric": "tokens", "period": "day", "max": 1000}
        await http.put("/v1/settings", json={"limits": [limit]}, headers=alpha.headers)
        assert (await http.get("/v1/settings", headers=beta.headers)).json()["limits"] == []
        unchanged = await http.put("/v1/settings", json={}, headers=alpha.headers)
        assert unchanged.json()["limits"][0]["max"] == 1000
        bad = [
            ({"limits": [{"metric": "tokens", "period": "week", "max": 1}]}, "limits[0].period"),
            ({"limits": [limit, limit]}, "limits[1]"),
            ({"routing": {"strategy": "fastest"}}, "routing.strategy"),
            ({"failover": {"enabled": True, "to": "x"}}, "failover.to"),
        ]
        for body, param in bad:
            response = await http.put("/v1/settings", json=body, headers=alpha.headers)
            assert response.status_code == 400
            assert response.json()["error"]["param"] == param
        user = await create_key(http, alpha)
        forbidden = await http.get("/v1/settings", headers=bearer(user["secret"]))
        assert forbidden.status_code == 403


class TestRebuildCounters:
    # The embedded default keeps its counters inside the server process: PostgreSQL + Redis.
    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    async def test_counters_are_recounted_from_the_ledger(
        self,
        http: httpx.AsyncClient,
        upstream: FakeUpstream,
        gateway_settings,
        tmp_path,
        monkeypatch: pytest.MonkeyPatch,
    ):
        import os
        import subprocess
        import sys
        from pathlib import Path

        from redis.asyncio import Redis

        assert gateway_settings.redis_url is not None
        # A process sees counters changed behind its back when it next renews its leases.
        monkeypatch.setattr(budget, "LEASE_SECONDS", 0.2)
        upstream.mode, upstream.words = "generate", 10
        tenant = await create_tenant(http)
        key = await create_key(http, tenant, max_spend_usd=1)
        assert await _chat(http, key["secret"], False, max_tokens=10) == 200
        spent = (await usage_when_settled(http, tenant, 1))["totals"]["cost_micros"]
        redis = Redis.from_url(gateway_settings.redis_url)
        try:
            names = [n async for n in redis.scan_iter(match=f"tollgate:key:{key['id']}:m*")]
            counters = [n for n in names if not n.endswith(b":holds")]
            assert len(counters) == 1
            await redis.set(counters[0], 10**12)  # corrupted: the key now looks spent
            await asyncio.sleep(0.3)
            assert await _chat(http, key["secret"], False, max_tokens=10) == 402
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")},
                "TOLLGATE_REDIS_URL": gateway_settings.redis_url,
                "TOLLGATE_DATA_DIR": str(tmp_path),
            }
            tollgate = str(Path(sys.executable).with_name("tollgate"))
            result = await asyncio.to_thread(
                subprocess.run,
                [tollgate, "usage", "rebuild-counters"],
                env=env,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("Dropped ")
            await asyncio.sleep(0.3)
            assert await _chat(http, key["secret"], False, max_tokens=10) == 200
            ledger = (await usage_when_settled(http, tenant, 3))["totals"]["cost_micros"]
            assert ledger == 2 * spent  # the refused request cost nothing
            for _ in range(50):  # the settlement lands just after the response
                if int(await redis.get(counters[0]) or 0) == ledger:
                    break
                await asyncio.sleep(0.02)
            assert int(await redis.get(counters[0]) or 0) == ledger
        finally:
            await redis.aclose()


class TestCounterStoreDown:
    @pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
    async def test_unreachable_redis_fails_closed_for_capped_keys_only(
        self, gateway_settings, upstream: FakeUpstream
    ):
        from api.app import create_app
        from tests.fakes.server import serve_in_thread
        from tools.testenv import free_port

        upstream.mode, upstream.words = "generate", 5
        dead = gateway_settings.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}
        )
        with serve_in_thread(create_app(dead)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                tenant = await create_tenant(client)
                capped = await create_key(client, tenant, max_spend_usd=5)
                free = await create_key(client, tenant)
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": HELLO},
                    headers=bearer(capped["secret"]),
                )
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "limits_unavailable"
                assert response.headers["x-should-retry"] == "true"
                assert upstream.seen == []
                assert await _chat(client, free["secret"], False, max_tokens=5) == 200
