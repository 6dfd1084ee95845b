"""Account choice, retry decisions and session keys, without servers."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from api.errors import (
    CapacityQueueFull,
    InvalidRequest,
    QuotaExhausted,
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api.gateway.providers.base import error_from_status
from api.gateway.providers.gemini import retry_delay_seconds
from api.gateway.providers.mock import MockProvider
from api.gateway.resilience import (
    RetryPolicy,
    classify,
    required_capability,
    retry_after_seconds,
    session_key,
)
from api.gateway.routing import Account, Router, TenantRouting
from api.settings import Settings
from tools.testenv import free_port


def _pool(*names: str, **fields: Any) -> list[Account]:
    return [Account(name, MockProvider(), **fields) for name in names]


def _router(accounts: list[Account], **options: Any) -> Router:
    return Router({"openai": accounts}, **options)


class TestChoose:
    def test_cooling_accounts_are_skipped_until_they_recover(self):
        a, b = _pool("a", "b")
        router = _router([a, b])
        a.health.cool(0.05, time.monotonic())
        for _ in range(20):
            ready, _ = router.choose("openai", TenantRouting())
            assert [x.name for x in ready] == ["b"]
        b.health.cool(0.2, time.monotonic())
        ready, recovers = router.choose("openai", TenantRouting())
        assert ready == []
        assert 0 < recovers - time.monotonic() <= 0.05
        time.sleep(0.06)
        assert [x.name for x in router.choose("openai", TenantRouting())[0]] == ["a"]

    def test_weights_and_health_share_the_traffic(self):
        heavy, light = _pool("heavy", "light")
        heavy.weight, light.weight = 3, 1
        router = _router([heavy, light])
        firsts = Counter(router.choose("openai", TenantRouting())[0][0].name for _ in range(4000))
        assert 0.70 < firsts["heavy"] / 4000 < 0.80
        for _ in range(32):
            heavy.health.failed()  # a failing account gets (almost) nothing
        firsts = Counter(router.choose("openai", TenantRouting())[0][0].name for _ in range(2000))
        assert firsts["heavy"] < 100

    def test_round_robin_and_latency(self):
        accounts = _pool("a", "b", "c")
        router = _router(accounts)
        rr = TenantRouting(strategy="round_robin")
        order = [router.choose("openai", rr)[0][0].name for _ in range(6)]
        assert order == ["a", "b", "c", "a", "b", "c"]
        for account, seconds in zip(accounts, (0.3, 0.1, 0.2), strict=True):
            account.health.succeeded(seconds)
        fast = TenantRouting(strategy="latency")
        assert [x.name for x in router.choose("openai", fast)[0]] == ["b", "c", "a"]

    def test_sticky_sessions_and_the_tenants_own_key_first(self):
        accounts = _pool("a", "b", "c")
        router = _router(accounts)
        tenant = TenantRouting()
        router.stick("s1", accounts[2])
        assert all(router.choose("openai", tenant, session="s1")[0][0].name == "c"
                   for _ in range(50))  # fmt: skip
        accounts[2].health.cool(10, time.monotonic())
        assert router.choose("openai", tenant, session="s1")[0][0].name != "c"
        own = Account("byok:openai", MockProvider(), byok=True)
        mine = TenantRouting(accounts={"openai": own})
        assert all(router.choose("openai", mine)[0][0] is own for _ in range(20))
        assert router.configured("openai", mine)
        assert not router.configured("gemini", mine)
        assert router.configured("gemini", TenantRouting(accounts={"gemini": own}))

    def test_a_capability_narrows_the_choice_when_an_account_declares_it(self):
        plain, audio = _pool("plain", "audio")
        audio.capabilities = frozenset({"audio"})
        router = _router([plain, audio])
        tenant = TenantRouting()
        assert all(router.choose("openai", tenant, capability="audio")[0] == [audio]
                   for _ in range(20))  # fmt: skip
        # None claims it: the account that lists its capabilities lacks it, the other serves.
        assert router.choose("openai", tenant, capability="images")[0] == [plain]
        assert router.serves("openai", tenant, "images")
        assert len(router.choose("openai", tenant)[0]) == 2  # chat: every account
        assert required_capability({"modalities": ["text", "audio"]}) == "audio"
        assert required_capability({"modalities": ["text"]}) is None

    def test_a_capability_no_account_may_serve_is_known_before_choosing(self):
        speech, images = _pool("speech", "images")
        speech.capabilities = frozenset({"audio"})
        images.capabilities = frozenset({"images"})
        router = _router([speech, images])
        tenant = TenantRouting()
        assert not router.serves("openai", tenant, "embeddings")
        assert router.choose("openai", tenant, capability="embeddings")[0] == []
        assert router.serves("openai", tenant, "images")

    def test_rpm_is_counted_per_account(self):
        a, b = _pool("a", "b")
        a.rpm = 2
        router = _router([a, b])
        a.counted()
        a.counted()
        assert [x.name for x in router.choose("openai", TenantRouting())[0]] == ["b"]

    async def test_the_capacity_queue_is_bounded(self):
        router = _router(_pool("a"), capacity_wait=0.2, queue_size=1)
        with pytest.raises(CapacityQueueFull) as refused:
            await router.wait_for_capacity(time.monotonic() + 5, 0.2)
        assert refused.value.headers["retry-after"] == "5"
        await router.wait_for_capacity(time.monotonic() + 0.01, 0.2)
        router.waiting = 1
        with pytest.raises(CapacityQueueFull):
            await router.wait_for_capacity(time.monotonic() + 0.01, 0.2)

    async def test_tenants_are_loaded_once_and_reloaded_when_changed(self):
        loads: list[uuid.UUID] = []

        async def load(tenant_id: uuid.UUID) -> TenantRouting:
            loads.append(tenant_id)
            return TenantRouting(failover=True)

        router = Router({}, loader=load, tenant_ttl=60)
        tenant_id = uuid.uuid4()
        assert (await router.tenant(tenant_id)).failover
        await router.tenant(tenant_id)
        assert len(loads) == 1
        router.tenant_changed(tenant_id)
        await router.tenant(tenant_id)
        assert len(loads) == 2


class TestSharedStateWithoutRedis:
    async def test_a_redis_that_does_not_answer_costs_only_the_sharing(self, caplog):
        # Nothing listens on this port: every shared write and read fails.
        redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        a, b = _pool("a", "b")
        router = _router([a, b], redis=redis)
        router.cool(a, 30)
        await router.recall("openai", TenantRouting(), "session-1")  # no answer: nothing known
        ready, _ = router.choose("openai", TenantRouting(), session="session-1")
        assert [x.name for x in ready] == ["b"]  # the cooldown holds in this process
        router.stick("session-1", b)
        a.health.cooldown_until = 0.0
        for _ in range(10):
            ready, _ = router.choose("openai", TenantRouting(), session="session-1")
            assert ready[0].name == "b"  # and so does the session
        await router.close()  # waits for the failed writes; none raises
        await redis.aclose()
        assert "could not share routing state through Redis" in caplog.text


class TestRetryDecisions:
    @pytest.mark.parametrize(
        ("error", "retry", "same", "cooldown"),
        [
            (RateLimited(headers={"retry-after": "7"}), True, True, 7.0),
            (RateLimited(), True, True, 20.0),
            (QuotaExhausted(), True, False, 300.0),
            (UpstreamError(), True, True, None),
            (UpstreamUnavailable(), True, True, None),
            (UpstreamTimeout(), True, True, None),
            (UpstreamClientError(status=400), False, False, None),
            (UpstreamClientError(status=422), False, False, None),
            (InvalidRequest(), False, False, None),
        ],
    )
    def test_classify(self, error, retry, same, cooldown):
        decision = classify(error, RetryPolicy())
        assert (decision.retry, decision.same_account, decision.cooldown) == (
            retry, same, cooldown
        )  # fmt: skip

    def test_insufficient_quota_is_its_own_error(self):
        fixture = Path(__file__).parents[1] / "fixtures/providers/openai-chat"
        raw = (fixture / "10_error_429_insufficient_quota.http").read_bytes()
        body = raw.partition(b"\n\n")[2]
        error = error_from_status("openai", 429, body, {})
        assert isinstance(error, QuotaExhausted)
        assert (error.status_code, error.public_code, error.retryable) == (
            429, "insufficient_quota", False
        )  # fmt: skip

    def test_a_usage_limit_reset_time_stands_in_for_retry_after(self):
        from api.gateway.providers.base import go_duration_seconds

        assert go_duration_seconds("6m0s") == 360
        assert go_duration_seconds("2.174s") == pytest.approx(2.174)
        assert go_duration_seconds("120ms") == pytest.approx(0.12)
        headers = {
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "1s",
        }
        error = error_from_status("openai", 429, b"{}", headers)
        assert error.headers["retry-after"] == "360"
        assert classify(error, RetryPolicy()).cooldown == 360

    def test_backoff_is_exponential_with_full_jitter_and_capped(self):
        policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
        for retry, cap in ((0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0), (30, 1.0)):
            delays = [policy.backoff(retry) for _ in range(200)]
            assert all(0 <= d <= cap for d in delays)
            assert max(delays) > cap / 2


class TestSessionKey:
    @pytest.mark.parametrize(
        ("headers", "body", "expected"),
        [
            ({"x-session-id": "h"}, {"session_id": "b"}, "h"),
            ({"session_id": "h2"}, {}, "h2"),
            ({}, {"session_id": "b"}, "b"),
            ({}, {"conversation_id": 42}, "42"),
            ({}, {"prompt_cache_key": "p"}, "p"),
            ({}, {"metadata": {"session_id": "m"}}, "m"),
            ({}, {"session_id": ""}, None),
            ({}, {"session_id": True}, None),
            ({}, {}, None),
        ],
    )
    def test_where_a_session_comes_from(self, headers, body, expected):
        assert session_key(headers, body) == expected


class TestPoolSettings:
    def test_pools_from_toml(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        config = tmp_path / "tollgate.toml"
        config.write_text(
            '[[upstreams.openai]]\napi_key = "sk-1"\nweight = 3\nrpm = 500\n'
            'capabilities = ["responses"]\n\n'
            '[[upstreams.openai]]\napi_key = "sk-2"\nname = "backup"\n'
            'base_url = "https://proxy.example/v1/"\n'
        )
        monkeypatch.setenv("TOLLGATE_CONFIG", str(config))
        monkeypatch.setenv("TOLLGATE_OPENAI_API_KEY", "sk-env")
        pools = Settings().upstream_pools
        assert [a.name for a in pools["openai"]] == ["openai-default", "openai-1", "backup"]
        first = pools["openai"][1]
        assert (first.api_key, first.weight, first.rpm) == ("sk-1", 3, 500)
        assert first.capabilities == frozenset({"responses"})
        assert first.base_url == "https://api.openai.com/v1"
        assert pools["openai"][2].base_url == "https://proxy.example/v1"
        assert pools["gemini"] == []

    def test_unknown_providers_are_refused(self):
        with pytest.raises(ValidationError, match="unknown provider 'mistral'"):
            Settings(upstreams={"mistral": [{"api_key": "x"}]})


class TestRetryHintsFromUpstreams:
    @pytest.mark.parametrize("delay", ["infs", "nans", "-3s", "1e999s", "xs", "27"])
    def test_nonsense_retry_delays_are_no_hint(self, delay: str):
        error = {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                              "retryDelay": delay}]}  # fmt: skip
        assert retry_delay_seconds(error) is None

    def test_a_retry_delay_is_rounded_up_to_whole_seconds(self):
        error = {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                              "retryDelay": "1.5s"}]}  # fmt: skip
        assert retry_delay_seconds(error) == 2

    @pytest.mark.parametrize(("value", "seconds"), [("inf", None), ("nan", None), ("3", 3.0)])
    def test_retry_after_must_be_a_finite_number(self, value: str, seconds: float | None):
        assert retry_after_seconds(RateLimited("slow", headers={"retry-after": value})) == seconds
