"""Every guarantee holds across processes: three API processes and two workers on one
PostgreSQL and one Redis, behind nginx sending requests round-robin (`tests/e2e/topology.py`).

The same acceptance checks as the single-process tests of each guarantee: caps and tenant caps
hold to the request, rate limits are exact across replicas, cooldowns and sticky sessions are
shared, an idempotent create makes one key, an alert fires once, a revoked key is refused by
every process, and each job runs once."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET_KEY, truncate_all
from tests.e2e.topology import Topology, topology
from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros, start_of_a_minute, usage_when_settled
from tests.fakes.upstream import FakeUpstream, billed_prompt_tokens
from tools.testenv import NGINX

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")

MINI = ("0.15", "0.075", "0.60")
POOL = ("sk-pool-a", "sk-pool-b", "sk-pool-c")
REVOCATION_BOUND_SECONDS = 10.0  # the key cache's TTL, if a change message were ever lost


@pytest.fixture(scope="module")
def many(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
    fake_upstream_server: FakeUpstream,
) -> Iterator[Topology]:
    workdir = tmp_path_factory.mktemp("many")
    config = workdir / "tollgate.toml"
    accounts = "".join(
        f'[[upstreams.openai]]\nname = "{key.removeprefix("sk-")}"\napi_key = "{key}"\n'
        f'base_url = "{fake_upstream_server.openai_base_url}"\n\n'
        for key in POOL
    )
    config.write_text(f"cooldown_seconds = 30\nretry_base_delay_seconds = 0.01\n\n{accounts}")
    env = {
        "TOLLGATE_CONFIG": str(config),
        "TOLLGATE_DATABASE_URL": postgres_url,
        "TOLLGATE_REDIS_URL": redis_url,
        "TOLLGATE_SECRET_KEY": SECRET_KEY,
        "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "TOLLGATE_ALLOW_PRIVATE_WEBHOOKS": "true",  # the alert receiver listens on loopback
        "TOLLGATE_LOG_LEVEL": "warning",
    }
    try:
        with topology(workdir, env) as running:
            yield running
    finally:
        truncate_all(postgres_url)


@pytest.fixture
async def lb(many: Topology, upstream: FakeUpstream) -> AsyncIterator[httpx.AsyncClient]:
    # A new connection per request: nginx balances requests, not connections, but this keeps
    # the test from leaning on that.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=many.url, timeout=60, limits=limits) as http:
        yield http


async def _chat(http: httpx.AsyncClient, secret: str, **body: Any) -> httpx.Response:
    payload = {"model": "gpt-4o-mini", "messages": HELLO, **body}
    return await http.post("/v1/chat/completions", json=payload, headers=bearer(secret))


class TestCaps:
    async def test_a_key_cap_holds_to_the_request_across_processes(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream, many: Topology
    ):
        upstream.mode, upstream.words = "generate", 100  # every answer uses all of max_tokens
        one = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 100, MINI)
        cap = 30 * one
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant, max_spend_usd=cap / 1_000_000)
        answers = await asyncio.gather(
            *(_chat(lb, key["secret"], max_tokens=100, stream=i % 2 == 0) for i in range(120))
        )
        counts = Counter(a.status_code for a in answers)
        assert set(counts) <= {200, 402}, (counts, many.log_text())
        # What the burst left is used one request at a time, down to the last request's worth.
        n = 0
        while (await _chat(lb, key["secret"], max_tokens=100)).status_code == 200:
            n += 1  # near the cap, requests are clamped to what is left: more, smaller ones
            assert len(upstream.seen) <= 120
        usage = await usage_when_settled(lb, tenant, 120 + n + 1)  # refusals are events too
        billed = sum(
            expected_cost_micros(r["prompt_tokens"], 0, r["completion_tokens"], MINI)
            for r in upstream.reported
        )
        assert usage["totals"]["cost_micros"] == billed  # every upstream answer, once
        assert cap - one < billed <= cap  # the cap holds, and nothing is stranded in leases

    async def test_a_tenant_cap_shared_by_keys_on_every_process_holds(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 100
        one = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 100, MINI)
        cap = 20 * one
        tenant = await create_tenant(lb)
        keys = [await create_key(lb, tenant, name=f"user{i}") for i in range(6)]
        limit = {"metric": "spend_usd", "period": "month", "max": cap / 1_000_000}
        put = await lb.put("/v1/settings", json={"limits": [limit]}, headers=tenant.headers)
        assert put.status_code == 200
        answers = await asyncio.gather(
            *(_chat(lb, keys[i % 6]["secret"], max_tokens=100) for i in range(80))
        )
        counts = Counter(a.status_code for a in answers)
        assert set(counts) <= {200, 402}, counts
        n = 0
        while (await _chat(lb, keys[n % 6]["secret"], max_tokens=100)).status_code == 200:
            n += 1  # near the cap, requests are clamped to what is left: more, smaller ones
            assert len(upstream.seen) <= 80
        usage = await usage_when_settled(lb, tenant, 80 + n + 1)
        billed = sum(
            expected_cost_micros(r["prompt_tokens"], 0, r["completion_tokens"], MINI)
            for r in upstream.reported
        )
        assert usage["totals"]["cost_micros"] == billed
        assert cap - one < billed <= cap

    async def test_a_rate_limit_is_exact_across_processes(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode, upstream.words = "generate", 5
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant, rpm=10)
        await start_of_a_minute()
        answers = await asyncio.gather(*(_chat(lb, key["secret"], max_tokens=5) for _ in range(30)))
        counts = Counter(a.status_code for a in answers)
        assert counts == {200: 10, 429: 20}, [a.text for a in answers if a.status_code == 429][:3]
        assert len(upstream.seen) == 10


class TestRouting:
    async def test_a_session_keeps_its_account_whichever_process_serves_it(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant)
        for session in ("a", "b", "c"):
            upstream.seen.clear()
            for _ in range(9):  # three turns on each process
                answer = await _chat(lb, key["secret"], session_id=session)
                assert answer.status_code == 200
            assert len(set(upstream.keys_seen())) == 1, upstream.keys_seen()

    async def test_a_cooldown_met_by_one_process_holds_in_every_process(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream, many: Topology
    ):
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant)
        upstream.key_modes[POOL[0]] = "status_429"
        # Until some process meets the 429, requests spread over the three accounts.
        for _ in range(30):
            assert (await _chat(lb, key["secret"])).status_code == 200
            if POOL[0] in upstream.keys_seen():
                break
        assert upstream.keys_seen().count(POOL[0]) == 1
        await asyncio.sleep(0.5)  # the cooldown's message reaches the other processes
        upstream.seen.clear()
        for api in many.apis:  # each process, directly
            async with httpx.AsyncClient(base_url=api, timeout=30) as http:
                for _ in range(6):
                    assert (await _chat(http, key["secret"])).status_code == 200
        assert POOL[0] not in upstream.keys_seen()


class TestOnce:
    async def test_an_idempotent_create_sent_to_every_process_makes_one_key(
        self, lb: httpx.AsyncClient
    ):
        tenant = await create_tenant(lb)
        headers = {**tenant.headers, "Idempotency-Key": "create-bob"}
        answers = await asyncio.gather(
            *(lb.post("/v1/keys", json={"name": "bob"}, headers=headers) for _ in range(12))
        )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert len({a.json()["secret"] for a in answers}) == 1
        listed = (await lb.get("/v1/keys", headers=tenant.headers)).json()["data"]
        assert [k["name"] for k in listed].count("bob") == 1

    async def test_each_alert_fires_once(self, lb: httpx.AsyncClient, upstream: FakeUpstream):
        upstream.mode, upstream.words = "generate", 20
        one = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 20, MINI)
        tenant = await create_tenant(lb)
        put = await lb.put(
            "/v1/settings", json={"alerts": {"webhook_url": upstream.hooks_url}},
            headers=tenant.headers,
        )  # fmt: skip
        assert put.status_code == 200, put.text
        signing = await lb.post("/v1/settings/webhook-secret", headers=tenant.headers)
        assert signing.status_code == 200
        key = await create_key(lb, tenant, max_spend_usd=10 * one / 1_000_000)
        statuses = [(await _chat(lb, key["secret"], max_tokens=20)).status_code for _ in range(14)]
        assert statuses[-1] == 402
        for _ in range(200):  # delivered within 20 s
            if len(upstream.hooks) >= 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # and nothing more arrives
        thresholds = sorted(json.loads(body)["threshold"] for _, body in upstream.hooks)
        assert thresholds == [50, 80, 100]
        listed = (await lb.get("/v1/alerts", headers=tenant.headers)).json()["data"]
        assert len(listed) == 3

    async def test_each_job_runs_once_on_two_workers(
        self, lb: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant)
        headers = bearer(key["secret"])
        body = {"model": "gpt-4o-mini", "messages": HELLO}
        jobs = []
        for n in range(8):
            job = {"endpoint": "/v1/chat/completions", "body": body, "metadata": {"n": str(n)}}
            submitted = await lb.post("/v1/jobs", json=job, headers=headers)
            assert submitted.status_code == 202, submitted.text
            jobs.append(submitted.json()["id"])
        finished = [await _finished(lb, job, headers) for job in jobs]
        assert [f["status"] for f in finished] == ["succeeded"] * 8
        assert all(f["attempts"] == 1 for f in finished)
        assert len(upstream.seen) == 8
        await usage_when_settled(lb, tenant, 8)


class TestRevocation:
    async def test_a_revoked_key_is_refused_by_every_process(
        self, lb: httpx.AsyncClient, many: Topology
    ):
        tenant = await create_tenant(lb)
        key = await create_key(lb, tenant)
        clients = [httpx.AsyncClient(base_url=api, timeout=30) for api in many.apis]
        try:
            for http in clients:  # the key is now in each process's cache
                assert (await _chat(http, key["secret"])).status_code == 200
            revoked = await lb.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
            assert revoked.status_code == 200
            started = time.monotonic()
            took = []
            for http in clients:
                while (await _chat(http, key["secret"])).status_code != 401:
                    assert time.monotonic() - started < REVOCATION_BOUND_SECONDS
                    await asyncio.sleep(0.01)
                took.append(time.monotonic() - started)
            assert len(took) == 3
        finally:
            for http in clients:
                await http.aclose()


async def _finished(http: httpx.AsyncClient, job_id: str, headers: dict[str, str]) -> Any:
    body: dict[str, Any] = {}
    for _ in range(600):
        body = (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {body}")
