"""Async jobs (`/v1/jobs`, SPEC §5.7) through a real server, on both backends: PostgreSQL +
Redis with the API's own arq worker, and the embedded default (SQLite, in-process tasks)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings
from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_settled
from tests.fakes.max_bill import MaxBiller
from tests.fakes.server import serve_in_thread
from tests.fakes.tool_models import ChainingAnthropic, ToolHooks
from tests.fakes.upstream import FakeUpstream, fixture

CHAT = {"model": "gpt-4o", "messages": HELLO}


async def _user(http: httpx.AsyncClient, **fields: Any) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return tenant, bearer(key["secret"])


async def _finished(
    http: httpx.AsyncClient, job_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(300):
        body = (await http.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {body}")


async def _submit(http: httpx.AsyncClient, headers: dict[str, str], **job: Any) -> dict[str, Any]:
    response = await http.post("/v1/jobs", json=job, headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body["object"] == "job"
    assert body["status"] in ("queued", "running", "succeeded")  # a fast worker may be done
    return body


class TestRunning:
    async def test_a_chat_job_answers_what_the_endpoint_answers_and_is_metered_once(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT,
                            metadata={"order": "42"})  # fmt: skip
        done = await _finished(http, job["id"], headers)
        assert done["status"] == "succeeded", done
        assert done["status_code"] == 200
        original = json.loads(
            fixture("openai-chat/02_response_nonstream_usage_cached_reasoning.json")
        )
        assert done["result"] == {**original, "provider": "openai"}
        assert done["metadata"] == {"order": "42"}
        assert done["attempts"] == 1
        assert done["usage"]["input_tokens"] == 2417
        assert done["usage"]["output_tokens"] == 1093
        assert done["usage"]["cost_micros"] == 14093
        assert len(upstream.seen) == 1
        logs = await logs_when_settled(http, tenant, 1)
        assert len(logs) == 1
        assert logs[0]["cost_micros"] == 14093
        assert logs[0]["endpoint"] == "/v1/chat/completions"

    async def test_a_job_refused_for_budget_fails_with_the_synchronous_error_body(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http, max_spend_usd=0.000001)
        direct = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert direct.status_code >= 400
        job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
        done = await _finished(http, job["id"], headers)
        assert done["status"] == "failed"
        assert done["status_code"] == direct.status_code
        assert done["error"] == direct.json()
        assert done["result"] is None
        assert done["usage"]["cost_micros"] == 0
        assert upstream.seen == []  # refused before any upstream call

    async def test_an_upstream_error_fails_the_job_in_the_endpoints_shape(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        upstream.mode = "400"
        job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
        done = await _finished(http, job["id"], headers)
        assert done["status"] == "failed"
        assert done["status_code"] == 400
        assert set(done["error"]["error"]) >= {"message", "type", "code"}

    async def test_a_thread_turn_runs_as_a_job_and_is_persisted_once(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
        body = {"model": "gpt-4o", "content": "Hello there"}
        job = await _submit(
            http, headers, endpoint=f"/v1/threads/{thread['id']}/messages", body=body
        )
        done = await _finished(http, job["id"], headers)
        assert done["status"] == "succeeded", done
        assert done["result"]["object"] == "thread.message"
        assert done["result"]["role"] == "assistant"
        assert done["usage"]["cost_micros"] == done["result"]["usage"]["cost_micros"] > 0
        messages = (await http.get(f"/v1/threads/{thread['id']}/messages", headers=headers)).json()
        assert [m["role"] for m in messages["data"]] == ["user", "assistant"]
        assert len(upstream.seen) == 1

    async def test_a_completion_webhook_is_signed_with_the_tenant_secret(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        secret = (await http.post("/v1/settings/webhook-secret", headers=tenant.headers)).json()
        signing = secret.get("webhook_secret") or secret.get("secret") or secret["signing_secret"]
        upstream.hook_failures = 1  # the first delivery fails: it is tried again
        job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT,
                            webhook_url=upstream.hooks_url)  # fmt: skip
        for _ in range(200):
            if upstream.hooks:
                break
            await asyncio.sleep(0.05)
        assert len(upstream.hooks) == 1
        received_headers, raw = upstream.hooks[0]
        t, v1 = (
            part.split("=", 1)[1] for part in received_headers["X-Tollgate-Signature"].split(",")
        )
        expected = hmac.new(signing.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        event = json.loads(raw)
        assert event["type"] == "job.completed"
        assert event["job"]["id"] == job["id"]
        assert event["job"]["status"] == "succeeded"
        for _ in range(100):
            shown = (await http.get(f"/v1/jobs/{job['id']}", headers=headers)).json()
            if shown["webhook_status"] == "delivered":
                break
            await asyncio.sleep(0.05)
        assert shown["webhook_status"] == "delivered"


class TestSubmitChecks:
    @pytest.mark.parametrize(
        ("job", "param"),
        [
            ({"endpoint": "/v1/embeddings", "body": {}}, "endpoint"),
            ({"endpoint": "/v1/threads/nope/messages", "body": {}}, "endpoint"),
            ({"endpoint": "/v1/chat/completions", "body": {"model": "gpt-4o"}}, "body.messages"),
            ({"endpoint": "/v1/chat/completions", "body": {**CHAT, "stream": True}}, "body.stream"),
            (
                {"endpoint": "/v1/chat/completions", "body": {**CHAT, "model": "no-such-model"}},
                "body.model",
            ),
            (
                {
                    "endpoint": "/v1/messages",
                    "body": {"model": "claude-sonnet-4", "messages": "hi", "max_tokens": 9},
                },
                "body.messages",
            ),
            ({"endpoint": "/v1/chat/completions", "body": {**CHAT, "n": "two"}}, "body.n"),
            (
                {"endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": "ftp://x"},
                "webhook_url",
            ),
            ({"endpoint": "/v1/chat/completions"}, "body"),
            ({"endpoint": "/v1/chat/completions", "body": CHAT, "extra": 1}, "extra"),
        ],
    )
    async def test_a_bad_job_is_a_400_naming_the_problem_now(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, job: dict[str, Any], param: str
    ):
        _, headers = await _user(http)
        response = await http.post("/v1/jobs", json=job, headers=headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param, error
        listed = (await http.get("/v1/jobs", headers=headers)).json()
        assert listed["data"] == []  # nothing was stored
        assert upstream.seen == []

    async def test_a_thread_turn_job_is_checked_like_the_turn(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
        endpoint = f"/v1/threads/{thread['id']}/messages"
        for body, param in [
            ({"content": "hi"}, "body.model"),
            ({"model": "gpt-4o", "content": "hi", "stream": True}, "body.stream"),
            ({"model": "gpt-4o", "content": "hi", "tools": ["unregistered"]}, "body.tools"),
            ({"model": "gpt-4o", "content": "hi", "max_tokens": 0}, "body.max_tokens"),
        ]:
            response = await http.post("/v1/jobs", json={"endpoint": endpoint, "body": body},
                                       headers=headers)  # fmt: skip
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param

    async def test_a_webhook_needs_the_tenant_signing_secret(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        response = await http.post("/v1/jobs", json={
            "endpoint": "/v1/chat/completions", "body": CHAT, "webhook_url": upstream.hooks_url,
        }, headers=headers)  # fmt: skip
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "webhook_url"

    async def test_an_idempotency_key_gives_the_same_job(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        job = {"endpoint": "/v1/chat/completions", "body": CHAT}
        keyed = {**headers, "Idempotency-Key": "order-42"}
        first = await http.post("/v1/jobs", json=job, headers=keyed)
        second = await http.post("/v1/jobs", json=job, headers=keyed)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]
        assert second.headers["idempotent-replayed"] == "true"
        other = await http.post("/v1/jobs", json={**job, "metadata": {"a": "b"}}, headers=keyed)
        assert other.status_code == 400
        assert other.json()["error"]["param"] == "Idempotency-Key"
        await _finished(http, first.json()["id"], headers)
        listed = (await http.get("/v1/jobs", headers=headers)).json()
        assert len(listed["data"]) == 1
        assert len(upstream.seen) == 1


class TestOwnership:
    async def test_jobs_are_seen_as_threads_are(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant = await create_tenant(http)
        alice = bearer((await create_key(http, tenant))["secret"])
        bob = bearer((await create_key(http, tenant))["secret"])
        other_tenant, eve = await _user(http)
        job = await _submit(http, alice, endpoint="/v1/chat/completions", body=CHAT)
        await _finished(http, job["id"], alice)
        for headers in (bob, eve, other_tenant.headers):
            assert (await http.get(f"/v1/jobs/{job['id']}", headers=headers)).status_code == 404
            assert (await http.delete(f"/v1/jobs/{job['id']}", headers=headers)).status_code == 404
            assert (await http.get("/v1/jobs", headers=headers)).json()["data"] == []
        seen = (await http.get(f"/v1/jobs/{job['id']}", headers=tenant.headers)).json()
        assert seen["id"] == job["id"]
        by_status = await http.get(
            "/v1/jobs", params={"status": "succeeded"}, headers=tenant.headers
        )
        assert [j["id"] for j in by_status.json()["data"]] == [job["id"]]
        none = await http.get("/v1/jobs", params={"status": "failed"}, headers=tenant.headers)
        assert none.json()["data"] == []
        bad = await http.get("/v1/jobs", params={"status": "done"}, headers=tenant.headers)
        assert bad.status_code == 400
        assert (await http.get("/v1/jobs/not-a-uuid", headers=alice)).status_code == 404


@pytest.fixture
def queue_only_settings(gateway_settings: Settings) -> Settings:
    """An API that queues jobs but runs none (workers run them elsewhere)."""
    return gateway_settings.model_copy(update={"api_runs_background_jobs": False})


@pytest.mark.postgres
@pytest.mark.redis
class TestCancel:
    @pytest.fixture(params=["postgres"])
    def database_url(self, request: pytest.FixtureRequest) -> str:  # a worker-less API needs Redis
        url: str = request.getfixturevalue("postgres_url")
        return url

    async def test_a_queued_job_is_cancelled_and_never_runs(
        self, queue_only_settings: Settings, upstream: FakeUpstream
    ):
        with serve_in_thread(create_app(queue_only_settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                _, headers = await _user(http)
                job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
                assert job["status"] == "queued"
                cancelled = await http.delete(f"/v1/jobs/{job['id']}", headers=headers)
                assert cancelled.status_code == 200
                assert cancelled.json()["status"] == "cancelled"
                again = await http.delete(f"/v1/jobs/{job['id']}", headers=headers)
                assert again.json()["status"] == "cancelled"
        # A worker that picks it up now finds it cancelled.
        with serve_in_thread(create_app(queue_only_settings.model_copy(
            update={"api_runs_background_jobs": True}
        ))) as url:  # fmt: skip
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                await asyncio.sleep(0.5)
                shown = (await http.get(f"/v1/jobs/{job['id']}", headers=headers)).json()
                assert shown["status"] == "cancelled"
                assert shown["attempts"] == 0
        assert upstream.seen == []

    async def test_a_key_revoked_before_its_job_runs_gets_the_401_a_request_would(
        self, queue_only_settings: Settings, upstream: FakeUpstream
    ):
        with serve_in_thread(create_app(queue_only_settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tenant = await create_tenant(http)
                key = await create_key(http, tenant)
                headers = bearer(key["secret"])
                job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
                revoked = await http.delete(f"/v1/keys/{key['id']}", headers=tenant.headers)
                assert revoked.status_code == 200, revoked.text
                direct = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
                assert direct.status_code == 401
        running = queue_only_settings.model_copy(update={"api_runs_background_jobs": True})
        with serve_in_thread(create_app(running)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                done = await _finished(http, job["id"], tenant.headers)
        assert done["status"] == "failed"
        assert done["status_code"] == 401
        assert done["error"] == direct.json()
        assert upstream.seen == []

    async def test_a_running_job_cannot_be_cancelled(
        self, gateway_settings: Settings, upstream: FakeUpstream
    ):
        upstream.mode = "stall"
        upstream.stall_seconds = 1.5
        settings = gateway_settings.model_copy(update={"upstream_read_timeout_seconds": 5.0})
        with serve_in_thread(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                _, headers = await _user(http)
                job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
                for _ in range(100):
                    if upstream.seen:
                        break
                    await asyncio.sleep(0.02)
                refused = await http.delete(f"/v1/jobs/{job['id']}", headers=headers)
                assert refused.status_code == 409, refused.text
                await _finished(http, job["id"], headers)


class TestEveryEndpoint:
    @pytest.mark.parametrize(
        ("endpoint", "body", "check"),
        [
            ("/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 64, "messages": HELLO},
             lambda r: r["type"] == "message"),
            ("/v1/responses", {"model": "gpt-4o", "input": "Hello"},
             lambda r: r["object"] == "response"),
            # Translated: an OpenAI-shaped job for a Claude model, and Messages for GPT.
            ("/v1/chat/completions", {"model": "claude-sonnet-4", "messages": HELLO},
             lambda r: r["object"] == "chat.completion"),
            ("/v1/messages", {"model": "gpt-4o", "max_tokens": 64, "messages": HELLO},
             lambda r: r["type"] == "message"),
        ],
    )  # fmt: skip
    async def test_each_model_endpoint_runs_as_a_job(
        self, every_http: httpx.AsyncClient, endpoint: str, body: dict[str, Any], check: Any
    ):
        tenant, headers = await _user(every_http)
        job = await _submit(every_http, headers, endpoint=endpoint, body=body)
        done = await _finished(every_http, job["id"], headers)
        assert done["status"] == "succeeded", done
        assert check(done["result"]), done["result"]
        assert done["usage"]["cost_micros"] > 0
        logs = await logs_when_settled(every_http, tenant, 1)
        assert [entry["cost_micros"] for entry in logs] == [done["usage"]["cost_micros"]]


class TestCaps:
    async def test_jobs_of_one_key_never_spend_past_its_cap(self, settings: Settings):
        """Each job reserves its worst case when it runs, as a request does. With an upstream
        that bills the most each request allows (`n` answers of `max_tokens` each), twelve jobs
        for a cap of four and a half never overrun it."""
        fake = MaxBiller()
        body = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 300, "n": 3}
        with serve_in_thread(fake.app()) as fake_url:
            configured = settings.model_copy(update={
                "openai_api_key": SecretStr("sk-operator"),
                "openai_base_url": f"{fake_url}/openai/v1",
            })  # fmt: skip
            with serve_in_thread(create_app(configured)) as url:
                async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                    _, free_headers = await _user(http)
                    alone = await _submit(http, free_headers, endpoint="/v1/chat/completions",
                                          body=body)  # fmt: skip
                    one = (await _finished(http, alone["id"], free_headers))["usage"]
                    assert one["output_tokens"] == 900  # billed at the ceiling: 3 answers of 300
                    cap = 4.5 * one["cost_micros"]
                    tenant, headers = await _user(http, max_spend_usd=cap / 1_000_000)
                    seen_before = len(fake.seen)
                    fake.delay_seconds = 0.3  # they overlap in the worker
                    jobs = [
                        await _submit(http, headers, endpoint="/v1/chat/completions", body=body)
                        for _ in range(12)
                    ]
                    done = [await _finished(http, job["id"], headers) for job in jobs]
                    logs = await logs_when_settled(http, tenant, len(done))
        statuses = Counter(job["status_code"] for job in done)
        assert set(statuses) <= {200, 402}, statuses
        assert 1 <= statuses[200] <= 5  # four whole, and one clamped to what was left
        assert len(fake.seen) - seen_before == statuses[200]
        spent = sum(job["usage"]["cost_micros"] for job in done)
        assert spent == sum(entry["cost_micros"] for entry in logs)
        assert spent <= cap


@pytest.mark.postgres
@pytest.mark.redis
class TestLostQueue:
    @pytest.fixture(params=["postgres"])
    def database_url(self, request: pytest.FixtureRequest) -> str:
        url: str = request.getfixturevalue("postgres_url")
        return url

    async def test_a_job_the_queue_lost_is_run_by_the_sweep(
        self, queue_only_settings: Settings, upstream: FakeUpstream, redis_url: str,
        postgres_url: str,
    ):  # fmt: skip
        import sqlalchemy as sa
        from redis.asyncio import Redis

        from api.db import create_engine

        with serve_in_thread(create_app(queue_only_settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                _, headers = await _user(http)
                job = await _submit(http, headers, endpoint="/v1/chat/completions", body=CHAT)
        redis = Redis.from_url(redis_url)
        await redis.delete("arq:queue", f"arq:job:job:{job['id']}")  # the queue forgot it
        await redis.aclose()
        engine = create_engine(postgres_url)
        async with engine.begin() as connection:  # and it has waited past the grace period
            await connection.execute(
                sa.text("UPDATE jobs SET updated_at = updated_at - interval '10 minutes'")
            )
        await engine.dispose()
        running = queue_only_settings.model_copy(update={"api_runs_background_jobs": True})
        with serve_in_thread(create_app(running)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                done = await _finished(http, job["id"], headers)
        assert done["status"] == "succeeded"
        assert done["attempts"] == 1
        assert len(upstream.seen) == 1


async def test_a_private_webhook_address_is_refused_at_submit(
    gateway_settings: Settings, upstream: FakeUpstream
):
    settings = gateway_settings.model_copy(update={"allow_private_webhooks": False})
    with serve_in_thread(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            tenant, headers = await _user(http)
            await http.post("/v1/settings/webhook-secret", headers=tenant.headers)
            response = await http.post("/v1/jobs", json={
                "endpoint": "/v1/chat/completions", "body": CHAT,
                "webhook_url": "http://127.0.0.1:9/hook",
            }, headers=headers)  # fmt: skip
            assert response.status_code == 400
            assert response.json()["error"]["param"] == "webhook_url"


async def test_a_thread_turn_job_runs_its_tool_loop(settings: Settings):
    """The job runs the turn on a worker, and the turn's tool calls are jobs of their own on
    the same queue; the webhook sees a signed call, and the turn is stored once."""
    with ChainingAnthropic() as anthropic, ToolHooks() as hooks:
        assert isinstance(anthropic, ChainingAnthropic)
        assert isinstance(hooks, ToolHooks)
        configured = settings.model_copy(update={
            "anthropic_api_key": SecretStr(anthropic.api_key),
            "anthropic_base_url": anthropic.base_url, "allow_private_webhooks": True,
        })  # fmt: skip
        with serve_in_thread(create_app(configured)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tenant, headers = await _user(http)
                schema = {"type": "object", "properties": {"q": {"type": "string"}},
                          "required": ["q"]}  # fmt: skip
                tool = await http.post("/v1/tools", headers=tenant.headers, json={
                    "name": "search", "input_schema": schema, "webhook_url": hooks.url("search"),
                })  # fmt: skip
                hooks.secrets["search"] = tool.json()["signing_secret"]
                thread = (await http.post("/v1/threads", json={}, headers=headers)).json()
                body = {"model": "claude-sonnet-4", "content": "find", "tools": ["search"]}
                job = await _submit(http, headers, body=body,
                                    endpoint=f"/v1/threads/{thread['id']}/messages")  # fmt: skip
                done = await _finished(http, job["id"], headers)
                history = await http.get(f"/v1/threads/{thread['id']}/messages", headers=headers)
    assert done["status"] == "succeeded", done
    assert done["result"]["content"][0]["text"] == 'Done: search={"q": "example"}'
    assert [(name, valid) for name, _, valid, _ in hooks.calls] == [("search", True)]
    assert [m["role"] for m in history.json()["data"]] == ["user", "assistant", "tool", "assistant"]
    assert done["usage"]["cost_micros"] == done["result"]["usage"]["cost_micros"] > 0
