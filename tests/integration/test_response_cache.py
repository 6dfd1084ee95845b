"""The exact response cache (SPEC §5.10): hits, misses and skips over Chat Completions, Messages
and Responses, streamed and not; a hit never reaches the provider, is metered as a hit with
what it saved, and bills the tenant's fraction; truncated and failed answers are never stored;
nothing crosses tenants or models."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, create_key, create_tenant
from tests.factories.usage import logs_when_seen
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.upstream import FakeUpstream

BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o", "messages": HELLO},
    "/v1/messages": {"model": "claude-sonnet-4", "max_tokens": 200, "messages": HELLO},
    "/v1/responses": {"model": "gpt-4o", "input": "Hello there", "store": False},
}


async def _cached_tenant(
    http: httpx.AsyncClient, **cache: Any
) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    answer = await http.put(
        "/v1/settings", json={"cache": {"enabled": True, **cache}}, headers=tenant.headers
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["cache"]["enabled"] is True
    key = await create_key(http, tenant)
    return tenant, {"Authorization": f"Bearer {key['secret']}"}


def _upstream_calls(upstream: FakeUpstream, claude: FakeAnthropic) -> int:
    return len(upstream.seen) + len(claude.seen)


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_repeat_is_answered_from_the_cache(
    every_http: httpx.AsyncClient, upstream, claude, path: str, stream: bool
):
    tenant, headers = await _cached_tenant(every_http)
    body = {**BODIES[path], "stream": stream}
    first = await every_http.post(path, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    assert "x-cache-skip-reason" not in first.headers
    calls = _upstream_calls(upstream, claude)
    assert calls == 1
    second = await every_http.post(path, json=body, headers=headers)
    assert second.status_code == 200
    assert second.headers["x-cache"] == "EXACT_HIT"
    assert 0 < int(second.headers["x-cache-ttl"]) <= 3600
    assert second.content == first.content  # the same answer, the same stream
    assert _upstream_calls(upstream, claude) == calls  # the provider never saw it
    logs = await logs_when_seen(every_http, tenant.headers, 2)
    hit, miss = logs  # newest first
    assert (hit["cache"], hit["cache_hits"], hit["cost_micros"]) == ("exact", 1, 0)
    assert hit["saved_tokens"] == miss["input_tokens"] + miss["output_tokens"] > 0
    assert hit["saved_micros"] == miss["cost_micros"] > 0
    assert (miss["cache"], miss["cache_hits"]) == (None, 0)


async def test_a_streamed_answer_is_not_served_to_a_plain_request(every_http, upstream, claude):
    _, headers = await _cached_tenant(every_http)
    body = BODIES["/v1/chat/completions"]
    streamed = await every_http.post(
        "/v1/chat/completions", json={**body, "stream": True}, headers=headers
    )
    plain = await every_http.post("/v1/chat/completions", json=body, headers=headers)
    assert streamed.headers["x-cache"] == plain.headers["x-cache"] == "MISS"
    assert plain.json()["object"] == "chat.completion"


class TestSkips:
    async def test_no_cache_bypasses_it(self, every_http, upstream, claude):
        _, headers = await _cached_tenant(every_http)
        body = BODIES["/v1/chat/completions"]
        await every_http.post("/v1/chat/completions", json=body, headers=headers)
        fresh = await every_http.post(
            "/v1/chat/completions", json=body, headers={**headers, "Cache-Control": "no-cache"}
        )
        assert fresh.headers["x-cache"] == "MISS"
        assert fresh.headers["x-cache-skip-reason"] == "no-cache"
        assert len(upstream.seen) == 2

    async def test_hot_sampling_and_stored_responses_are_not_cached(self, every_http, upstream):
        _, headers = await _cached_tenant(every_http, max_temperature=0.5)
        hot = {**BODIES["/v1/chat/completions"], "temperature": 0.9}
        for _ in range(2):
            answer = await every_http.post("/v1/chat/completions", json=hot, headers=headers)
            assert answer.headers["x-cache-skip-reason"] == "temperature"
        kept = {"model": "gpt-4o", "input": "Hello there", "temperature": 0}
        for _ in range(2):
            answer = await every_http.post("/v1/responses", json=kept, headers=headers)
            assert answer.headers["x-cache-skip-reason"] == "stateful"
        assert len(upstream.seen) == 4

    async def test_test_keys_are_never_cached(self, every_http, upstream):
        tenant, _ = await _cached_tenant(every_http)
        test = await create_key(every_http, tenant, test=True)
        headers = {"Authorization": f"Bearer {test['secret']}"}
        body = BODIES["/v1/chat/completions"]
        for _ in range(2):
            answer = await every_http.post("/v1/chat/completions", json=body, headers=headers)
            assert answer.status_code == 200
            assert "x-cache" not in answer.headers  # the mock's answers: nothing to save
        live = await create_key(every_http, tenant)
        first_live = await every_http.post(
            "/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {live['secret']}"},
        )  # fmt: skip
        assert first_live.headers["x-cache"] == "MISS"  # never the mock's answer
        assert first_live.json()["provider"] == "openai"

    async def test_anthropic_betas_are_part_of_the_question(self, every_http, claude):
        _, headers = await _cached_tenant(every_http)
        body = BODIES["/v1/messages"]
        await every_http.post("/v1/messages", json=body, headers=headers)
        other = await every_http.post(
            "/v1/messages", json=body, headers={**headers, "anthropic-beta": "output-128k"}
        )
        same = await every_http.post("/v1/messages", json=body, headers=headers)
        assert other.headers["x-cache"] == "MISS"
        assert same.headers["x-cache"] == "EXACT_HIT"

    async def test_a_tenant_without_the_cache_sees_no_cache_headers(self, every_http, upstream):
        tenant = await create_tenant(every_http)
        key = await create_key(every_http, tenant)
        headers = {"Authorization": f"Bearer {key['secret']}"}
        for _ in range(2):
            answer = await every_http.post(
                "/v1/chat/completions", json=BODIES["/v1/chat/completions"], headers=headers
            )
            assert "x-cache" not in answer.headers
        assert len(upstream.seen) == 2


class TestWhatIsStored:
    async def test_a_truncated_answer_is_never_stored(self, every_http, upstream):
        _, headers = await _cached_tenant(every_http)
        upstream.mode = "generate"  # answers end with finish_reason "length"
        body = {**BODIES["/v1/chat/completions"], "max_tokens": 5}
        for _ in range(2):
            answer = await every_http.post("/v1/chat/completions", json=body, headers=headers)
            assert answer.json()["choices"][0]["finish_reason"] == "length"
            assert answer.headers["x-cache"] == "MISS"
        assert len(upstream.seen) == 2

    async def test_an_error_is_never_stored(self, every_http, upstream):
        _, headers = await _cached_tenant(every_http)
        body = BODIES["/v1/chat/completions"]
        upstream.mode = "400"
        failed = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert failed.status_code == 400
        upstream.mode = "ok"
        answer = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert (answer.status_code, answer.headers["x-cache"]) == (200, "MISS")

    async def test_nothing_crosses_tenants_or_models(self, every_http, upstream):
        _, first = await _cached_tenant(every_http)
        _, second = await _cached_tenant(every_http)
        body = BODIES["/v1/chat/completions"]
        await every_http.post("/v1/chat/completions", json=body, headers=first)
        other_tenant = await every_http.post("/v1/chat/completions", json=body, headers=second)
        other_model = await every_http.post(
            "/v1/chat/completions", json={**body, "model": "gpt-4o-mini"}, headers=first
        )
        assert other_tenant.headers["x-cache"] == other_model.headers["x-cache"] == "MISS"
        same_question_other_user = await every_http.post(
            "/v1/chat/completions", json={**body, "user": "someone-else"}, headers=first
        )
        assert same_question_other_user.headers["x-cache"] == "EXACT_HIT"
        assert len(upstream.seen) == 3


class TestBilling:
    async def test_a_hit_bills_the_tenants_fraction_and_holds_caps(self, every_http, upstream):
        tenant, headers = await _cached_tenant(every_http, billed_fraction=0.5)
        body = BODIES["/v1/chat/completions"]
        await every_http.post("/v1/chat/completions", json=body, headers=headers)
        hit = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert hit.headers["x-cache"] == "EXACT_HIT"
        hit_log, miss_log = await logs_when_seen(every_http, tenant.headers, 2)
        assert hit_log["cost_micros"] == math.ceil(miss_log["cost_micros"] * 0.5)
        # A key capped below a hit's price is refused, before the cache answers.
        poor = await create_key(every_http, tenant, max_spend_usd=0)
        refused = await every_http.post(
            "/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {poor['secret']}"},
        )  # fmt: skip
        assert refused.status_code == 402
        assert len(upstream.seen) == 1

    async def test_access_control_applies_to_hits(self, every_http, upstream):
        tenant, headers = await _cached_tenant(every_http)
        body = BODIES["/v1/chat/completions"]
        await every_http.post("/v1/chat/completions", json=body, headers=headers)
        blocked = await create_key(every_http, tenant, allowed_models=["gpt-4o-mini"])
        refused = await every_http.post(
            "/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {blocked['secret']}"},
        )  # fmt: skip
        assert refused.status_code == 403

    async def test_the_usage_report_shows_hits_and_savings(self, every_http, upstream):
        tenant, headers = await _cached_tenant(every_http)
        body = BODIES["/v1/chat/completions"]
        for _ in range(3):
            await every_http.post("/v1/chat/completions", json=body, headers=headers)
        await logs_when_seen(every_http, tenant.headers, 3)
        stats = (await every_http.get("/v1/cache/stats", headers=tenant.headers)).json()
        miss = (await every_http.get("/v1/logs", headers=tenant.headers)).json()["data"][-1]
        assert stats["hits"] == 2
        assert stats["saved_tokens"] == 2 * (miss["input_tokens"] + miss["output_tokens"])
        assert stats["saved_micros"] == 2 * miss["cost_micros"]
        (row,) = stats["by_key"]
        assert row["hits"] == 2
