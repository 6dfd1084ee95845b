"""Upstream resilience through a real server: retries, account pools, cooldowns, sticky
sessions, the capacity queue and cross-provider failover, by fault injection in the fakes.

The database plays no part in any of this, so these run on PostgreSQL + Redis only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings, UpstreamAccount
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream
from tools.testenv import free_port

KEYS = ("sk-pool-a", "sk-pool-b", "sk-pool-c")
# As `gateway_settings` in tests/conftest.py: millisecond backoff, a 2 s read timeout.
FAST: dict[str, Any] = {
    "upstream_read_timeout_seconds": 2.0,
    "retry_base_delay_seconds": 0.01,
    "retry_max_delay_seconds": 0.05,
    "retry_max_total_seconds": 1.0,
    "capacity_wait_seconds": 0.5,
}


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    from tests.conftest import truncate_all

    yield postgres_url
    truncate_all(postgres_url)


def pool_settings(settings: Settings, upstream: FakeUpstream, *keys: str, **extra: Any) -> Settings:
    accounts = [
        UpstreamAccount(api_key=SecretStr(key), name=key.removeprefix("sk-"),
                        base_url=upstream.openai_base_url)
        for key in keys
    ]  # fmt: skip
    return settings.model_copy(
        update={"openai_api_key": None, "upstreams": {"openai": accounts}, **FAST, **extra}
    )


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with serve_in_thread(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


async def user(http: httpx.AsyncClient, **settings: Any) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    if settings:
        response = await http.put("/v1/settings", json=settings, headers=tenant.headers)
        assert response.status_code == 200, response.text
    key = await create_key(http, tenant)
    return tenant, bearer(key["secret"])


async def chat(
    http: httpx.AsyncClient, headers: dict[str, str], *, stream: bool = False,
    model: str = "gpt-4o", endpoint: str = "/v1/chat/completions", **extra: Any,
) -> httpx.Response:  # fmt: skip
    body: dict[str, Any] = {"model": model, "stream": stream, **extra}
    body.update({"input": "Hi"} if endpoint == "/v1/responses" else {"messages": HELLO})
    if endpoint == "/v1/messages":
        body.setdefault("max_tokens", 100)
    return await http.post(endpoint, json=body, headers=headers)


def data_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]


FAULTS = [
    pytest.param("429", "rate_limited", id="429-retry-after"),
    pytest.param("500", "upstream_error", id="500"),
    pytest.param("status_529", "upstream_unavailable", id="529"),
    pytest.param("503", "upstream_unavailable", id="503"),
    pytest.param("quota", "insufficient_quota", id="insufficient_quota"),
]


class TestPoolFailover:
    @pytest.mark.parametrize(("fault", "reason"), FAULTS)
    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_failing_account_is_answered_by_another(
        self, settings: Settings, upstream: FakeUpstream, fault: str, reason: str, stream: bool
    ):
        async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
            tenant, headers = await user(http)
            upstream.failures = [fault]  # the first attempt fails, whichever account it hits
            response = await chat(http, headers, stream=stream)
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-retries"] == "1"
            assert "x-gateway-failover-from" not in response.headers
            first, second = upstream.keys_seen()
            assert first != second  # moved to the other account, at once
            if stream:
                assert data_events(response)[-1] == "[DONE]"
            else:
                assert response.json()["provider"] == "openai"
            log = (await logs_when_settled(http, tenant, 1))[0]
            assert log["status"] == 200
            assert log["attempts"] == 2
            assert log["account"] == second.removeprefix("sk-")
            assert [a["reason"] for a in log["trace"]] == [reason, None]
            assert log["trace"][0]["account"] == first.removeprefix("sk-")

    async def test_retries_on_one_account_with_backoff_until_it_answers(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, KEYS[0])) as http:
            _, headers = await user(http)
            upstream.failures = ["500", "503"]
            response = await chat(http, headers)
            assert response.status_code == 200
            assert response.headers["x-gateway-retries"] == "2"
            assert upstream.keys_seen() == [KEYS[0]] * 3

    async def test_connection_refused_moves_to_the_next_account(
        self, settings: Settings, upstream: FakeUpstream
    ):
        closed = UpstreamAccount(api_key=SecretStr("sk-closed"), name="closed",
                                 base_url=f"http://127.0.0.1:{free_port()}/v1")  # fmt: skip
        pool = pool_settings(settings, upstream, KEYS[0])
        pool = pool.model_copy(
            update={"upstreams": {"openai": [closed, *pool.upstreams["openai"]]}}
        )
        async with serve(pool) as http:
            _, headers = await user(http, routing={"strategy": "round_robin"})
            answers = [await chat(http, headers, stream=n % 2 == 1) for n in range(4)]
            assert [a.status_code for a in answers] == [200] * 4
            assert any(a.headers.get("x-gateway-retries") == "1" for a in answers)
            assert set(upstream.keys_seen()) == {KEYS[0]}

    async def test_read_timeout_moves_to_the_next_account(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
            _, headers = await user(http)
            upstream.failures, upstream.stall_seconds = ["stall"], 3.0  # read timeout: 2 s
            response = await chat(http, headers)
            assert response.status_code == 200
            assert response.headers["x-gateway-retries"] == "1"
            assert len(set(upstream.keys_seen())) == 2

    async def test_a_stream_dropped_before_its_first_byte_is_retried(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
            tenant, headers = await user(http)
            upstream.failures = ["drop0"]
            response = await chat(http, headers, stream=True)
            assert response.status_code == 200
            assert response.headers["x-gateway-retries"] == "1"
            events = data_events(response)
            assert events[-1] == "[DONE]"
            assert "".join(
                json.loads(e)["choices"][0]["delta"].get("content") or ""
                for e in events[:-1] if json.loads(e)["choices"]
            )  # a whole answer  # fmt: skip
            log = (await logs_when_settled(http, tenant, 1))[0]
            assert (log["status"], log["attempts"]) == (200, 2)

    async def test_a_stream_dropped_after_its_first_byte_ends_with_an_error(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, *KEYS[:2])) as http:
            tenant, headers = await user(http)
            upstream.mode = "drop"
            response = await chat(http, headers, stream=True)
            assert response.status_code == 200  # the status was sent with the first byte
            events = data_events(response)
            assert json.loads(events[-2])["error"]["code"] == "upstream_error"
            assert events[-1] == "[DONE]"
            assert len(upstream.seen) == 1  # never sent twice: the client has half an answer
            log = (await logs_when_settled(http, tenant, 1))[0]
            assert log["status"] == 502

    async def test_every_account_failing_is_502_after_the_bounded_retries(
        self, settings: Settings, upstream: FakeUpstream
    ):
        async with serve(pool_settings(settings, upstream, *KEYS)) as http:
            tenant, headers = await user(http)
            upstream.mode = "500"
            for stream in (False, True):
                response = await chat(http, headers, stream=stream)
                assert response.status_code == 502
                assert response.json()["error"]["code"] == "upstream_error"
                assert response.headers["x-gateway-retries"] == "3"  # 4 attempts
                assert response.headers["x-should-retry"] == "true"
            assert len(upstream.seen) == 8
            logs = await logs_when_settled(http, tenant, 2)
            assert {(log["status"], log["attempts"]) for log in logs} == {(502, 4)}

    @pytest.mark.parametrize(
        ("fault", "status", "code"),
        [("400", 400, "context_length_exceeded"), ("quota", 429, "insufficient_quota")],
    )
    async def test_never_retried_on_the_same_account(
        self, settings: Settings, upstream: FakeUpstream, fault: str, status: int, code: str
    ):
        async with serve(pool_settings(settings, upstream, KEYS[0])) as http:
            _, headers = await user(http)
            upstream.mode = fault
            response = await chat(http, headers)
            assert response.status_code == status
            assert response.json()["error"]["code"] == code
            assert response.headers["x-should-retry"] == "false"
            assert len(upstream.seen) == 1


class TestCooldown:
    async def test_a_rate_limited_account_is_skipped_until_it_recovers(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, *KEYS, cooldown_seconds=1.0)
        async with serve(pool) as http:
            _, headers = await user(http, routing={"strategy": "round_robin"})
            upstream.key_modes[KEYS[0]] = "status_429"  # no retry-after: the default cooldown
            before = [await chat(http, headers) for _ in range(12)]
            assert all(a.status_code == 200 for a in before)
            seen = upstream.keys_seen()
            assert seen.count(KEYS[0]) == 1  # asked once, then left alone
            assert {KEYS[1], KEYS[2]} <= set(seen)
            upstream.key_modes.clear()
            upstream.seen.clear()
            await asyncio.sleep(1.1)
            after = [await chat(http, headers) for _ in range(30)]
            assert all(a.status_code == 200 for a in after)
            assert KEYS[0] in upstream.keys_seen()  # its traffic came back

    async def test_retry_after_is_honoured_on_a_single_account(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, KEYS[0], retry_max_total_seconds=5.0,
                             capacity_wait_seconds=5.0)  # fmt: skip
        async with serve(pool) as http:
            _, headers = await user(http)
            upstream.failures = ["429"]  # retry-after: 3
            started = asyncio.get_running_loop().time()
            response = await chat(http, headers)
            waited = asyncio.get_running_loop().time() - started
            assert response.status_code == 200
            assert response.headers["x-gateway-retries"] == "1"
            assert waited >= 2.9

    async def test_the_capacity_queue_waits_then_refuses(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, KEYS[0], cooldown_seconds=0.6,
                             capacity_wait_seconds=1.0, retry_max_total_seconds=0.0)  # fmt: skip
        async with serve(pool) as http:
            _, headers = await user(http)
            upstream.failures = ["status_429"]
            first = await chat(http, headers)
            assert first.status_code == 429  # no time to retry
            second = await chat(http, headers)  # waits out the 0.6 s cooldown in the queue
            assert second.status_code == 200
        short = pool.model_copy(update={"capacity_wait_seconds": 0.1})
        async with serve(short) as http:
            _, headers = await user(http)
            upstream.failures = ["status_429"]
            assert (await chat(http, headers)).status_code == 429
            refused = await chat(http, headers, stream=True)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "capacity_queue_full"
            assert refused.headers["retry-after"] == "1"


class TestStickySessions:
    @pytest.mark.parametrize(
        ("where", "value"),
        [("header", "x-session-id"), ("header", "session_id"), ("body", "prompt_cache_key"),
         ("body", "conversation_id")],
    )  # fmt: skip
    async def test_a_session_stays_on_one_account_while_it_is_healthy(
        self, settings: Settings, upstream: FakeUpstream, where: str, value: str
    ):
        async with serve(pool_settings(settings, upstream, *KEYS)) as http:
            _, headers = await user(http)
            for session in ("s-1", "s-2"):
                upstream.seen.clear()
                for _ in range(20):
                    extra = {value: session} if where == "body" else {}
                    given = {**headers, value: session} if where == "header" else headers
                    assert (await chat(http, given, **extra)).status_code == 200
                counts = Counter(upstream.keys_seen())
                assert counts.most_common(1)[0][1] >= 19  # >= 95 %

    async def test_a_session_moves_when_its_account_fails(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, *KEYS, cooldown_seconds=30.0)
        async with serve(pool) as http:
            _, headers = await user(http)
            session = {**headers, "x-session-id": "conversation-7"}
            await chat(http, session)
            home = upstream.keys_seen()[0]
            upstream.key_modes[home] = "status_429"
            upstream.seen.clear()
            answers = [await chat(http, session) for _ in range(10)]
            assert all(a.status_code == 200 for a in answers)
            seen = upstream.keys_seen()
            assert seen[0] == home
            assert seen.count(home) == 1
            assert len(set(seen[1:])) == 1  # and stays on its new account


class TestAcrossProcesses:
    """Two API processes on one Redis (each server has its own event loop and router), as
    behind a round-robin load balancer."""

    async def test_a_session_keeps_its_account_whichever_process_serves_it(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, *KEYS)
        async with serve(pool) as one, serve(pool) as two:
            _, headers = await user(one)
            for session in ("s-1", "s-2", "s-3"):
                upstream.seen.clear()
                given = {**headers, "x-session-id": session}
                for turn in range(12):
                    answer = await chat(one if turn % 2 else two, given)
                    assert answer.status_code == 200
                assert len(set(upstream.keys_seen())) == 1, upstream.keys_seen()

    async def test_a_cooldown_in_one_process_holds_in_the_others(
        self, settings: Settings, upstream: FakeUpstream, redis_url: str
    ):
        pool = pool_settings(settings, upstream, *KEYS, cooldown_seconds=30.0)
        async with serve(pool) as one, serve(pool) as two:
            _, headers = await user(one)
            # A session on process two, on some account: the one to rate-limit.
            pinned = {**headers, "x-session-id": "pinned"}
            assert (await chat(two, pinned)).status_code == 200
            home = upstream.keys_seen()[0]
            upstream.key_modes[home] = "status_429"
            upstream.seen.clear()
            # Process one, sent the session (whose account it reads from Redis), meets the 429
            # and cools the account; the session moves on.
            assert (await chat(one, pinned)).status_code == 200
            assert upstream.keys_seen()[0] == home
            await _cooldown_shared(redis_url, home.removeprefix("sk-"))
            upstream.seen.clear()
            answers = [await chat(two, {**headers, "x-session-id": f"s-{n}"}) for n in range(9)]
            assert all(a.status_code == 200 for a in answers)
            assert home not in upstream.keys_seen()  # two never asked the cooling account
            # A process that starts now knows the cooldown too.
            async with serve(pool) as three:
                await asyncio.sleep(0.5)  # its listener subscribes and reads the cooldowns
                upstream.seen.clear()
                for n in range(9):
                    given = {**headers, "x-session-id": f"t-{n}"}
                    assert (await chat(three, given)).status_code == 200
                assert home not in upstream.keys_seen()


async def _cooldown_shared(redis_url: str, account: str) -> None:
    """Wait until the cooldown is in Redis, then for its message to reach the others."""
    from redis.asyncio import Redis

    async with Redis.from_url(redis_url) as redis:
        for _ in range(100):
            if await redis.hexists("tollgate:cooldowns", account):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{account}'s cooldown was never shared")
    await asyncio.sleep(0.5)  # published with the write: delivered on loopback in well under this


@pytest.fixture
def every_settings(
    settings: Settings, upstream: FakeUpstream, claude: FakeAnthropic, gemini: FakeGemini
) -> Settings:
    return settings.model_copy(
        update={
            "openai_api_key": SecretStr("sk-operator-openai"),
            "openai_base_url": upstream.openai_base_url,
            "anthropic_api_key": SecretStr(anthropic_upstream.API_KEY),
            "anthropic_base_url": claude.base_url,
            "gemini_api_key": SecretStr(gemini_upstream.API_KEY),
            "gemini_base_url": gemini.base_url,
            **FAST,
        }
    )


class TestCrossProviderFailover:
    @pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
    @pytest.mark.parametrize("stream", [False, True])
    async def test_an_equivalent_model_answers_when_the_tenant_enabled_it(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini,
        endpoint: str, stream: bool,
    ):  # fmt: skip
        async with serve(every_settings) as http:
            tenant, headers = await user(http, failover={"enabled": True})
            upstream.mode = "503"
            response = await chat(http, headers, stream=stream, endpoint=endpoint)
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-failover-from"] == "openai/gpt-4o"
            # The cheapest flagship elsewhere: Gemini 2.5 Pro (Claude Sonnet 4 costs more).
            assert response.headers["x-gateway-failover-to"] == "gemini/gemini-2.5-pro"
            assert int(response.headers["x-gateway-retries"]) >= 1
            assert len(gemini.seen) == 1
            if not stream:
                assert response.json()["provider"] == "gemini"
            log = (await logs_when_settled(http, tenant, 1))[0]
            assert (log["status"], log["provider"], log["model"]) == (
                200, "gemini", "gemini-2.5-pro"
            )  # fmt: skip
            assert log["failover_from"] == "openai/gpt-4o"
            assert log["cost_micros"] > 0
            assert log["trace"][-1]["provider"] == "gemini"

    async def test_no_failover_across_providers_unless_enabled(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini,
        claude: FakeAnthropic,
    ):  # fmt: skip
        async with serve(every_settings) as http:
            _, headers = await user(http)
            upstream.mode = "503"
            response = await chat(http, headers)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "upstream_unavailable"
            assert "x-gateway-failover-to" not in response.headers
            assert not gemini.seen
            assert not claude.seen

    async def test_the_next_provider_follows_when_the_first_alternate_fails(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini,
        claude: FakeAnthropic,
    ):  # fmt: skip
        async with serve(every_settings) as http:
            _, headers = await user(http, failover={"enabled": True})
            upstream.mode, gemini.mode = "500", "503"
            response = await chat(http, headers, endpoint="/v1/messages")
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-failover-to"] == (
                "anthropic/claude-sonnet-4-20250514"
            )
            assert response.json()["type"] == "message"
            metrics = (await http.get("/metrics", headers=bearer(ADMIN_TOKEN))).text
            assert (
                'tollgate_failovers_total{from_provider="openai",to_provider="anthropic"} 1.0'
                in (metrics)
            )
            assert (
                'tollgate_upstream_retries_total{code="upstream_unavailable",provider="gemini"}'
                in (metrics)
            )

    async def test_a_chat_fails_over_to_chat_models_and_embeddings_never_fail_over(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http, failover={"enabled": True})
            upstream.mode, upstream.media_mode = "500", "error500"
            response = await chat(http, headers, model="gpt-4o-mini")
            assert response.status_code == 200, response.text
            moved_to = response.headers["x-gateway-failover-to"]
            assert moved_to.startswith("gemini/gemini-2")
            assert "embedding" not in moved_to
            embedded = await http.post(
                "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"},
                headers=headers,
            )  # fmt: skip
            assert embedded.status_code == 502
            assert "x-gateway-failover-to" not in embedded.headers
            assert not gemini.embedded

    async def test_client_errors_do_not_fail_over(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http, failover={"enabled": True})
            upstream.mode = "400"
            response = await chat(http, headers)
            assert response.status_code == 400
            assert not gemini.seen

    async def test_a_key_limited_to_one_provider_does_not_fail_over(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            tenant = await create_tenant(http)
            await http.put("/v1/settings", json={"failover": {"enabled": True}},
                           headers=tenant.headers)  # fmt: skip
            key = await create_key(http, tenant, allowed_providers=["openai"])
            upstream.mode = "503"
            response = await chat(http, bearer(key["secret"]))
            assert response.status_code == 503
            assert not gemini.seen

    async def test_the_cap_holds_across_a_failover(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            tenant = await create_tenant(http)
            await http.put("/v1/settings", json={"failover": {"enabled": True}},
                           headers=tenant.headers)  # fmt: skip
            key = await create_key(http, tenant, max_spend_usd=1.0)
            upstream.mode = "503"
            response = await chat(http, bearer(key["secret"]), max_tokens=50)
            assert response.status_code == 200
            assert response.headers["x-gateway-failover-to"] == "gemini/gemini-2.5-pro"
            log = (await logs_when_settled(http, tenant, 1))[0]
            got = (await http.get(f"/v1/keys/{key['id']}", headers=tenant.headers)).json()
            # The original model's hold was released: only what Gemini produced is spent.
            assert log["cost_micros"] > 0
            assert got["spend_micros"] == log["cost_micros"]


class TestProviderSignals:
    async def test_gemini_retry_info_cools_the_account_down(
        self, every_settings: Settings, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http)
            gemini.mode = "429"  # RESOURCE_EXHAUSTED with RetryInfo retryDelay "27s"
            first = await chat(http, headers, model="gemini-2.5-flash")
            assert first.status_code == 429
            assert first.headers["retry-after"] == "27"
            second = await chat(http, headers, model="gemini-2.5-flash")
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "capacity_queue_full"
            assert 25 <= int(second.headers["retry-after"]) <= 27
            assert len(gemini.seen) == 1  # not asked again while it said to wait

    async def test_a_gemini_rate_limit_fails_over_to_an_economy_model(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http, failover={"enabled": True})
            gemini.mode = "429"
            response = await chat(http, headers, model="gemini-2.5-flash", stream=True)
            assert response.status_code == 200
            assert response.headers["x-gateway-failover-to"] == "openai/gpt-4o-mini"
            assert upstream.seen[-1].body["model"] == "gpt-4o-mini"
            assert data_events(response)[-1] == "[DONE]"

    async def test_anthropic_overloaded_529_fails_over(
        self, every_settings: Settings, upstream: FakeUpstream, claude: FakeAnthropic
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http, failover={"enabled": True})
            claude.mode = "529"
            response = await chat(http, headers, model="claude-sonnet-4", endpoint="/v1/messages")
            assert response.status_code == 200, response.text
            assert response.headers["x-gateway-failover-from"] == (
                "anthropic/claude-sonnet-4-20250514"
            )
            assert response.headers["x-gateway-failover-to"] == "openai/o3-mini"
            body = response.json()
            assert body["type"] == "message"
            assert body["provider"] == "openai"
            assert len(claude.seen) == 4  # every attempt on its one account first

    async def test_an_account_over_its_rpm_is_left_alone(
        self, settings: Settings, upstream: FakeUpstream
    ):
        pool = pool_settings(settings, upstream, *KEYS[:2])
        limited = pool.upstreams["openai"][0].model_copy(update={"rpm": 2})
        pool = pool.model_copy(
            update={"upstreams": {"openai": [limited, pool.upstreams["openai"][1]]}}
        )
        async with serve(pool) as http:
            _, headers = await user(http)
            answers = [await chat(http, headers) for _ in range(12)]
            assert all(a.status_code == 200 for a in answers)
            assert upstream.keys_seen().count(KEYS[0]) <= 2 + 2  # a minute may turn mid-test


class TestThreadTurnFailover:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_a_turn_fails_over_as_a_proxied_request_does(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini, stream: bool
    ):
        async with serve(every_settings) as http:
            tenant, headers = await user(http, failover={"enabled": True})
            upstream.mode = "503"
            thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
            url = f"/v1/threads/{thread['id']}/messages"
            body = {"model": "gpt-4o", "content": "Hi", "stream": stream}
            response = await http.post(url, json=body, headers=headers)
            assert response.status_code == 200, response.text
            if stream:
                completed = [
                    json.loads(line[6:])
                    for line in response.text.split("\n")
                    if line.startswith("data: ") and "thread.message.completed" in line
                ]
                message = completed[-1]["message"]
            else:
                message = response.json()
            assert (message["provider"], message["model"]) == ("gemini", "gemini-2.5-pro")
            assert len(gemini.seen) == 1
            log = (await logs_when_settled(http, tenant, 1))[0]
            assert (log["status"], log["provider"], log["model"]) == (
                200, "gemini", "gemini-2.5-pro"
            )  # fmt: skip
            assert log["failover_from"] == "openai/gpt-4o"
            stored = (await http.get(url, headers=headers)).json()["data"]
            assert [(m["role"], m.get("provider")) for m in stored] == [
                ("user", None), ("assistant", "gemini"),
            ]  # fmt: skip

    async def test_without_failover_the_turn_fails_and_nothing_is_stored(
        self, every_settings: Settings, upstream: FakeUpstream, gemini: FakeGemini
    ):
        async with serve(every_settings) as http:
            _, headers = await user(http)
            upstream.mode = "503"
            thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
            url = f"/v1/threads/{thread['id']}/messages"
            response = await http.post(
                url, json={"model": "gpt-4o", "content": "Hi"}, headers=headers
            )
            assert response.status_code == 503
            assert not gemini.seen
            assert (await http.get(url, headers=headers)).json()["data"] == []
