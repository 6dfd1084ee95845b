"""The bundled SDK against Tollgate as users run it: uvicorn on a loopback port, the fake
OpenAI upstream, localstripe, and the example tool server from `sdk/examples/` as the webhook
receiver. Every scenario runs through the sync client and the async client, on PostgreSQL +
Redis and on the embedded SQLite default."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import importlib.util
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import tollgate
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from tollgate.types import (
    BillingPlan,
    BillingRun,
    ContentBlockDeltaEvent,
    MessageCompletedEvent,
    ToolResultEvent,
)

from api.app import create_app
from api.billing.amounts import previous_period
from api.kit.time import utcnow
from api.settings import Settings
from tests.factories.billing import SECRET_KEY as STRIPE_KEY
from tests.factories.billing import WEBHOOK_SECRET, add_spend, create_customer, month_moment
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes.server import serve_in_thread
from tests.fakes.stripe import LocalStripe
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).parents[2] / "sdk" / "examples"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
MODEL = "gpt-4o-mini"  # the fake OpenAI upstream answers it for live keys, the mock for test keys
FLAVORS = ["sync", "async"]


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"tollgate_example_{name[:-3]}", EXAMPLES / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class ToolServer:
    """The example tool server on a loopback port; `secrets` is what it verifies with."""

    url: str
    app: FastAPI
    secrets: dict[str, str]

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.app.state.events
        return events


@contextlib.contextmanager
def run_tool_server() -> Iterator[ToolServer]:
    secrets: dict[str, str] = {}
    app = load_example("tool_server.py").create_app(secrets)
    with serve_in_thread(app) as url:
        yield ToolServer(url, app, secrets)


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with run_tool_server() as server:
        yield server


def create_tenant(base_url: str, name: str = "Acme") -> tuple[str, str]:
    """(tenant id, master key), through the operator's admin API."""
    response = httpx.post(
        f"{base_url}/admin/tenants", json={"name": name},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["master_key"]


@dataclass
class Driver:
    """Runs one scenario through either client: sync calls in a thread, async ones awaited."""

    client: tollgate.Tollgate | tollgate.AsyncTollgate
    tenant_id: str

    @property
    def is_async(self) -> bool:
        return isinstance(self.client, tollgate.AsyncTollgate)

    def as_key(self, secret: str | None) -> Driver:
        assert secret is not None
        return Driver(self.client.with_options(api_key=secret), self.tenant_id)

    async def __call__(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if not self.is_async:
            return await asyncio.to_thread(method, *args, **kwargs)
        result = method(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def all(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Any]:
        """Every item of a list (all its pages) or of an iterator."""
        if not self.is_async:
            return await asyncio.to_thread(lambda: list(method(*args, **kwargs)))
        return [item async for item in method(*args, **kwargs)]

    async def stream(
        self, method: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> tuple[list[Any], tollgate.types.Message]:
        """A streamed turn's events, and its final message."""
        if not self.is_async:

            def run() -> tuple[list[Any], tollgate.types.Message]:
                with method(*args, **kwargs) as stream:
                    return list(stream), stream.get_final_message()

            return await asyncio.to_thread(run)
        async with await method(*args, **kwargs) as stream:
            return [event async for event in stream], await stream.get_final_message()


async def eventually(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Polls `check` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        result = check()
        result = await result if inspect.isawaitable(result) else result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def driver_for(flavor: str, base_url: str) -> AsyncIterator[Driver]:
    tenant_id, master = create_tenant(base_url)
    if flavor == "sync":
        client = tollgate.Tollgate(api_key=master, base_url=base_url, max_retries=0)
        try:
            yield Driver(client, tenant_id)
        finally:
            client.close()
    else:
        async with tollgate.AsyncTollgate(
            api_key=master, base_url=base_url, max_retries=0
        ) as async_client:
            yield Driver(async_client, tenant_id)


@pytest.fixture
def sdk_settings(gateway_settings: Settings, stripe_fake: LocalStripe) -> Settings:
    return gateway_settings.model_copy(
        update={"stripe_api_base": stripe_fake.url, "stripe_max_network_retries": 0}
    )


@pytest.fixture
def base_url(sdk_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(sdk_settings)) as url:
        yield url


@pytest.fixture(params=FLAVORS)
async def sdk(request: pytest.FixtureRequest, base_url: str) -> AsyncIterator[Driver]:
    async with driver_for(request.param, base_url) as driver:
        yield driver


class TestKeys:
    async def test_mint_read_change_list_rotate_revoke(self, sdk: Driver):
        keys = sdk.client.keys
        key = await sdk(
            keys.create, name="alice", max_spend_usd=20, metadata={"user_id": "u_42"},
            limits=[{"metric": "requests", "period": "day", "max": 100}],
            allowed_models=[MODEL],
        )  # fmt: skip
        assert key.secret is not None
        assert key.secret.startswith("qlk_live_")
        assert {(limit.metric, limit.period) for limit in key.limits} == {
            ("spend_usd", "month"), ("requests", "day"),
        }  # fmt: skip
        fetched = await sdk(keys.retrieve, key.id)
        assert (fetched.secret, fetched.spend_micros, fetched.remaining_usd) == (None, 0, 20.0)
        assert fetched.metadata == {"user_id": "u_42"}
        updated = await sdk(keys.update, key.id, max_spend_usd=None, rpm=5)
        assert (updated.max_spend_usd, updated.rpm, updated.allowed_models) == (None, 5, [MODEL])

        for name in ("bob", "carol"):
            await sdk(keys.create, name=name, test=True)
        first = await sdk(keys.list, limit=1)
        assert (len(first.data), first.has_more) == (1, True)
        everyone = await sdk.all(keys.list, limit=1)
        assert sorted(k.name for k in everyone) == ["alice", "bob", "carol", "master"]

        alice = sdk.as_key(key.secret)
        assert (await alice(alice.client.keys.retrieve_self)).id == key.id
        with pytest.raises(tollgate.PermissionDeniedError) as denied:
            await alice(alice.client.keys.list)
        assert denied.value.code == "insufficient_scope"

        rotated = await sdk(keys.rotate, key.id)
        assert rotated.secret not in (None, key.secret)
        with pytest.raises(tollgate.AuthenticationError) as stale:
            await alice(alice.client.keys.retrieve_self)
        assert stale.value.code == "invalid_api_key"
        revoked = await sdk(keys.revoke, key.id)
        assert revoked.status == "revoked"
        gone = sdk.as_key(rotated.secret)
        with pytest.raises(tollgate.AuthenticationError):
            await gone(gone.client.keys.retrieve_self)

    async def test_errors_carry_status_code_param_and_request_id(self, sdk: Driver):
        with pytest.raises(tollgate.NotFoundError) as missing:
            await sdk(sdk.client.keys.retrieve, str(uuid.uuid4()))
        assert (missing.value.status_code, missing.value.code) == (404, "not_found")
        assert missing.value.request_id
        with pytest.raises(tollgate.BadRequestError) as bad:
            await sdk(sdk.client.keys.create, name="")
        assert (bad.value.status_code, bad.value.param) == (400, "name")


async def _register_weather(sdk: Driver, tool_server: ToolServer) -> tollgate.types.Tool:
    tool = await sdk(
        sdk.client.tools.create, name="get_weather", description="Today's weather in a city",
        input_schema=WEATHER, webhook_url=f"{tool_server.url}/tools/get_weather",
        timeout_ms=5000,
    )  # fmt: skip
    assert tool.signing_secret is not None
    tool_server.secrets["get_weather"] = tool.signing_secret  # deployed with the tool server
    return tool


class TestThreadsAndTools:
    async def test_a_turn_runs_a_registered_tool(self, sdk: Driver, tool_server: ToolServer):
        tool = await _register_weather(sdk, tool_server)
        key = await sdk(sdk.client.keys.create, name="alice", max_spend_usd=5)
        alice = sdk.as_key(key.secret)
        threads = alice.client.threads
        thread = await alice(threads.create, system="Be brief.", metadata={"chat": "c_1"})
        reply = await alice(
            threads.messages.create, thread.id, model=MODEL,
            content="What should I wear in Lisbon today?", tools=["get_weather"],
        )  # fmt: skip
        assert (reply.role, reply.thread_id, reply.stop_reason) == (
            "assistant",
            thread.id,
            "end_turn",
        )
        assert reply.text
        assert reply.usage is not None
        assert reply.usage.cost_micros > 0

        history = await alice.all(threads.messages.list, thread.id, limit=2)
        assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"]
        results = {block["name"]: block for block in history[2].content}
        assert results["get_weather"]["content"] == "Lisbon: sunny, 24 °C"
        assert results["get_weather"]["is_error"] is False
        assert results["get_stock_price"]["is_error"] is True  # the model asked for more
        newest = await alice(threads.messages.list, thread.id, order="desc", limit=1)
        assert newest.data[0].id == reply.id

        assert (await alice(threads.retrieve, thread.id)).message_count == 4
        assert [t.id for t in await alice.all(threads.list)] == [thread.id]
        theirs = await sdk.all(sdk.client.threads.list, key_id=key.id)
        assert [t.id for t in theirs] == [thread.id]

        tools = sdk.client.tools
        assert [t.name for t in await sdk.all(tools.list)] == ["get_weather"]
        assert (await sdk(tools.retrieve, tool.id)).signing_secret is None
        rotated = await sdk(tools.rotate_secret, tool.id)
        assert rotated.signing_secret not in (None, tool.signing_secret)
        assert (await sdk(tools.delete, tool.id)).deleted
        with pytest.raises(tollgate.NotFoundError):
            await sdk(tools.retrieve, tool.id)
        deleted = await alice(threads.delete, thread.id)
        assert (deleted.object, deleted.id, deleted.deleted) == ("thread.deleted", thread.id, True)
        with pytest.raises(tollgate.NotFoundError):
            await alice(threads.retrieve, thread.id)

    async def test_a_streamed_turn_ends_with_the_stored_answer(
        self, sdk: Driver, tool_server: ToolServer
    ):
        await _register_weather(sdk, tool_server)
        key = await sdk(sdk.client.keys.create, name="alice", test=True)  # the mock provider
        alice = sdk.as_key(key.secret)
        thread = await alice(alice.client.threads.create)
        events, final = await alice.stream(
            alice.client.threads.messages.stream, thread.id, model=MODEL,
            content="Weather?", tools=["get_weather"],
        )  # fmt: skip
        kinds = [event.type for event in events]
        assert kinds[0] == "message_start"
        assert kinds.count("message_start") == 2  # the tool call, then the answer
        assert kinds[-1] == "thread.message.completed"
        tool_results = [e for e in events if isinstance(e, ToolResultEvent)]
        assert [(r.name, r.content) for r in tool_results] == [
            ("get_weather", "No forecast for 'example'.")
        ]
        text = "".join(
            e.delta.text or "" for e in events[kinds.index("thread.tool_result") :]
            if isinstance(e, ContentBlockDeltaEvent)
        )  # fmt: skip
        assert isinstance(events[-1], MessageCompletedEvent)
        assert final == events[-1].message
        assert final.text == text
        stored = await alice.all(alice.client.threads.messages.list, thread.id)
        assert (stored[-1].id, stored[-1].content) == (final.id, final.content)
        # The answer counts the whole turn; the list, each model call on its own message.
        calls = [m.usage for m in stored if m.usage is not None]
        assert final.usage == calls[0].model_copy(
            update={"input_tokens": sum(u.input_tokens for u in calls),
                    "output_tokens": sum(u.output_tokens for u in calls)}
        )  # fmt: skip

    async def test_a_repeated_idempotency_key_returns_the_stored_turn(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        alice = sdk.as_key(key.secret)
        thread = await alice(alice.client.threads.create)
        send = alice.client.threads.messages.create
        first = await alice(send, thread.id, model=MODEL, content="Hi", idempotency_key="t-1")
        again = await alice(send, thread.id, model=MODEL, content="Hi", idempotency_key="t-1")
        assert again == first
        assert (await alice(alice.client.threads.retrieve, thread.id)).message_count == 2

    async def test_a_key_over_its_cap_gets_budget_exceeded(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", max_spend_usd=0)
        alice = sdk.as_key(key.secret)
        thread = await alice(alice.client.threads.create)
        with pytest.raises(tollgate.BudgetExceededError) as capped:
            await alice(alice.client.threads.messages.create, thread.id, model=MODEL, content="Hi")
        assert (capped.value.status_code, capped.value.code) == (402, "budget_exceeded")
        assert not isinstance(capped.value, tollgate.PaymentRequiredError)


class TestJobs:
    async def test_submit_wait_list_and_the_signed_completion(
        self, sdk: Driver, tool_server: ToolServer
    ):
        secret = await sdk(sdk.client.settings.create_webhook_secret)
        tool_server.secrets["events"] = secret.secret
        key = await sdk(sdk.client.keys.create, name="alice")
        alice = sdk.as_key(key.secret)
        jobs = alice.client.jobs
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Summarise"}]}
        job = await alice(
            jobs.submit, endpoint="/v1/chat/completions", body=body, metadata={"report": "r_17"},
            webhook_url=f"{tool_server.url}/events",
        )  # fmt: skip
        assert (job.status in ("queued", "running"), job.metadata) == (True, {"report": "r_17"})
        done = await alice(jobs.wait, job.id, timeout=60, poll_interval=0.05)
        assert (done.status, done.status_code) == ("succeeded", 200)
        assert done.result["choices"][0]["message"]["content"]
        assert done.usage is not None
        assert done.usage.cost_micros > 0
        assert (await alice(jobs.cancel, job.id)).status == "succeeded"  # finished: as it is
        assert [j.id for j in await alice.all(jobs.list, status="succeeded")] == [job.id]
        assert [j.id for j in await sdk.all(sdk.client.jobs.list)] == [job.id]
        events = await eventually(lambda: tool_server.events)
        assert [(e["type"], e["job"]["id"]) for e in events] == [("job.completed", job.id)]

        thread = await alice(alice.client.threads.create)
        turn = await alice(
            jobs.submit, endpoint=f"/v1/threads/{thread.id}/messages",
            body={"model": MODEL, "content": "Hi"},
        )  # fmt: skip
        ran = await alice(jobs.wait, turn.id, timeout=60, poll_interval=0.05)
        assert (ran.status, ran.result["object"], ran.result["role"]) == (
            "succeeded", "thread.message", "assistant",
        )  # fmt: skip

    async def test_bad_bodies_and_unknown_jobs(self, sdk: Driver):
        with pytest.raises(tollgate.BadRequestError) as bad:
            await sdk(
                sdk.client.jobs.submit, endpoint="/v1/chat/completions", body={"model": MODEL}
            )
        assert bad.value.param is not None
        assert bad.value.param.startswith("body")
        with pytest.raises(tollgate.NotFoundError):
            await sdk(sdk.client.jobs.retrieve, str(uuid.uuid4()))


class TestUsageAndLogs:
    async def test_usage_export_and_logs_after_calls_through_the_official_sdk(
        self, sdk: Driver, tmp_path: Path
    ):
        key = await sdk(sdk.client.keys.create, name="=alice")  # a name a spreadsheet would run
        other = await sdk(sdk.client.keys.create, name="bob")
        for user, texts in ((key, ("Hi", "Hello again")), (other, ("Hey",))):
            openai = sdk.client.openai(api_key=user.secret, max_retries=0)
            try:
                for text in texts:
                    messages = [{"role": "user", "content": text}]
                    reply = await sdk(
                        openai.chat.completions.create, model=MODEL, messages=messages
                    )
                    assert reply.choices[0].message.content
            finally:
                await sdk(openai.close)

        logs = await eventually(lambda: _logs_of(sdk, 3))
        assert all(log.cost_micros > 0 and log.status == 200 for log in logs)
        mine = await sdk.all(sdk.client.logs.list, key_id=key.id)
        assert len(mine) == 2

        usage = await sdk(sdk.client.usage.query)
        assert (usage.totals.requests, sorted(k.key_name for k in usage.by_key)) == (
            3, ["=alice", "bob"],
        )  # fmt: skip
        assert usage.totals.cost_micros == sum(log.cost_micros for log in logs)
        by_model = await sdk(sdk.client.usage.query, group_by="model", key_id=key.id)
        assert by_model.by_model is not None
        assert sum(m.requests for m in by_model.by_model) == 2
        by_day = await sdk(sdk.client.usage.query, group_by="day")
        assert by_day.by_day is not None
        assert [d.day for d in by_day.by_day] == [utcnow().strftime("%Y-%m-%d")]
        alice = sdk.as_key(key.secret)
        assert (await alice(alice.client.usage.query)).totals.requests == 2  # only its own

        path = tmp_path / "usage.csv"
        written = await sdk(sdk.client.usage.export, path)
        assert written == path.stat().st_size > 0
        with path.open(newline="") as file:
            from_file = list(csv.DictReader(file))
        rows = await sdk.all(sdk.client.usage.iter_export)
        assert [row.id for row in rows] == [row["id"] for row in from_file]
        assert sorted(row.key_name for row in rows) == ["'=alice", "'=alice", "bob"]
        assert sum(row.cost_micros for row in rows) == usage.totals.cost_micros


async def _logs_of(sdk: Driver, count: int) -> list[Any] | None:
    logs = await sdk.all(sdk.client.logs.list)
    return logs if len(logs) >= count else None


class TestBilling:
    async def test_stripe_settings_sync_and_runs(
        self, sdk: Driver, stripe_fake: LocalStripe, engine: AsyncEngine
    ):
        stripe = sdk.client.billing.stripe
        assert (await sdk(stripe.retrieve)).configured is False
        account = await sdk(
            stripe.set, secret_key=STRIPE_KEY, webhook_secret=WEBHOOK_SECRET, markup_bps=2000
        )
        assert (account.configured, account.secret_key_last4, account.markup_bps) == (
            True, STRIPE_KEY[-4:], 2000,
        )  # fmt: skip
        assert account.webhook_path.endswith(sdk.tenant_id)

        customer = await create_customer(stripe_fake.url)
        key = await sdk(sdk.client.keys.create, name="alice", stripe_customer_id=customer)
        period = previous_period(utcnow())
        await add_spend(engine, sdk.tenant_id, key.id, [1_500_000], month_moment(period))

        plan = await sdk(sdk.client.billing.sync, period=period, dry_run=True)
        assert isinstance(plan, BillingPlan)
        assert (plan.amount_cents, [r.customer_id for r in plan.records]) == (180, [customer])
        run = await sdk(sdk.client.billing.sync, period=period)
        assert isinstance(run, BillingRun)
        assert (run.status, run.invoices, run.amount_cents) == ("complete", 1, 180)
        assert run.records is not None
        assert run.records[0].lines[0].key_id == key.id
        again = await sdk(sdk.client.billing.sync, period=period)
        assert (again.id, again.invoices, again.syncs) == (run.id, 1, 2)  # never billed twice

        runs = await sdk.all(sdk.client.billing.runs.list)
        assert ([r.id for r in runs], runs[0].records) == ([run.id], None)
        detail = await sdk(sdk.client.billing.runs.retrieve, run.id)
        assert detail.records is not None
        assert detail.records[0].stripe_invoice_id == run.records[0].stripe_invoice_id
        this_month = utcnow().strftime("%Y-%m")
        with pytest.raises(tollgate.BadRequestError) as early:
            await sdk(sdk.client.billing.sync, period=this_month)
        assert early.value.param == "period"


class TestProviders:
    async def test_bring_your_own_key(self, sdk: Driver, upstream: FakeUpstream):
        providers = sdk.client.providers
        saved = await sdk(
            providers.set, "openai", api_key="sk-tenant-own-0001", base_url=upstream.openai_base_url
        )
        assert (saved.name, saved.enabled, saved.key_last4) == ("openai", True, "0001")
        assert [p.name for p in await sdk.all(providers.list)] == ["openai"]
        assert (await sdk(providers.retrieve, "openai")).base_url == upstream.openai_base_url
        upstream.rejected_keys.add("sk-tenant-wrong-01")
        with pytest.raises(tollgate.BadRequestError) as refused:
            await sdk(providers.set, "openai", api_key="sk-tenant-wrong-01")
        assert refused.value.param == "api_key"
        assert (await sdk(providers.delete, "openai")).deleted
        with pytest.raises(tollgate.NotFoundError):
            await sdk(providers.retrieve, "openai")


class TestSettingsAndAlerts:
    async def test_the_caches_and_retention(self, sdk: Driver):
        settings = sdk.client.settings
        before = await sdk(settings.retrieve)
        assert before.cache is not None
        assert before.cache.enabled is False
        updated = await sdk(
            settings.update, cache={"enabled": True, "ttl_seconds": 600},
            semantic_cache={"enabled": True, "threshold": 0.95},
            retention={"trace_days": 7},
        )  # fmt: skip
        assert updated.cache is not None
        assert updated.semantic_cache is not None
        assert (updated.cache.enabled, updated.cache.ttl_seconds) == (True, 600)
        assert updated.semantic_cache.threshold == 0.95
        assert updated.retention is not None
        assert (updated.retention.trace_days, updated.retention.log_days) == (7, None)
        stats = await sdk(sdk.client.usage.cache_stats)
        assert (stats.hits, stats.saved_micros) == (0, 0)

    async def test_limits_alerts_and_the_signed_alert_webhook(
        self, sdk: Driver, tool_server: ToolServer
    ):
        settings = sdk.client.settings
        assert (await sdk(settings.retrieve)).alerts.signing_secret_set is False
        updated = await sdk(
            settings.update, alerts={"webhook_url": f"{tool_server.url}/events"},
            failover={"enabled": True}, routing={"strategy": "latency"},
            limits=[{"metric": "spend_usd", "period": "month", "max": 100}],
        )  # fmt: skip
        assert (updated.failover.enabled, updated.routing.strategy) == (True, "latency")
        assert [(limit.metric, limit.max) for limit in updated.limits] == [("spend_usd", 100)]
        secret = await sdk(settings.create_webhook_secret)
        tool_server.secrets["events"] = secret.secret
        assert (await sdk(settings.retrieve)).alerts.signing_secret_set is True

        limit = {"metric": "requests", "period": "day", "max": 2}
        key = await sdk(sdk.client.keys.create, name="alice", test=True, limits=[limit])
        alice = sdk.as_key(key.secret)
        thread = await alice(alice.client.threads.create)
        for _ in range(2):
            await alice(alice.client.threads.messages.create, thread.id, model=MODEL, content="Hi")
        with pytest.raises(tollgate.BudgetExceededError):
            await alice(alice.client.threads.messages.create, thread.id, model=MODEL, content="Hi")

        events = await eventually(lambda: len(tool_server.events) >= 3 and tool_server.events)
        assert sorted(e["threshold"] for e in events) == [50, 80, 100]  # the second crossed two
        assert {(e["type"], e["key_id"]) for e in events} == {("budget.threshold_reached", key.id)}
        alerts = await eventually(lambda: _delivered_alerts(sdk))
        assert sorted(a.threshold for a in alerts) == [50, 80, 100]


async def _delivered_alerts(sdk: Driver) -> list[Any] | None:
    alerts = await sdk.all(sdk.client.alerts.list)
    return alerts if len(alerts) == 3 and all(a.delivered_at for a in alerts) else None


class TestStoredResponses:
    async def test_read_page_and_delete_what_the_official_sdk_stored(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        openai = sdk.client.openai(api_key=key.secret, max_retries=0)
        try:
            first = await sdk(openai.responses.create, model=MODEL, input="Hi")
            history = [
                {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"},
            ]  # fmt: skip
            second = await sdk(
                openai.responses.create, model=MODEL, input=history, previous_response_id=first.id
            )
        finally:
            await sdk(openai.close)
        alice = sdk.as_key(key.secret)
        stored = await alice(alice.client.responses.retrieve, second.id)
        assert (stored.id, stored.previous_response_id) == (second.id, first.id)
        assert stored.output_text == second.output_text
        as_master = await sdk(sdk.client.responses.retrieve, second.id)
        assert as_master.output == stored.output

        items = await alice.all(alice.client.responses.input_items.list, second.id, limit=1)
        texts = [item.text for item in items if item.type == "message"]
        assert texts[:3] == ["three", "two", "one"]  # newest first, a page of one at a time
        oldest = await alice(alice.client.responses.input_items.list, second.id, order="asc")
        assert [i.id for i in oldest.data] == [i.id for i in reversed(items)]

        deleted = await sdk(sdk.client.responses.delete, first.id)
        assert (deleted.id, deleted.deleted) == (first.id, True)
        with pytest.raises(tollgate.NotFoundError):
            await alice(alice.client.responses.retrieve, first.id)

    async def test_a_conversation_and_its_items(self, sdk: Driver):
        key = await sdk(sdk.client.keys.create, name="alice", test=True)
        alice = sdk.as_key(key.secret)
        conversations = alice.client.conversations
        first = {"type": "message", "role": "user", "content": "I am planning a trip."}
        conversation = await alice(conversations.create, items=[first], metadata={"chat": "c1"})
        assert conversation.id.startswith("conv_")
        updated = await alice(conversations.update, conversation.id, metadata={"chat": "c2"})
        assert updated.metadata == {"chat": "c2"}
        added = await alice(
            conversations.items.create, conversation.id,
            items=[{"type": "message", "role": "user", "content": "To Lisbon."}],
        )  # fmt: skip
        added_id = added.data[0].id
        assert added_id is not None

        openai = sdk.client.openai(api_key=key.secret, max_retries=0)
        try:
            reply = await sdk(
                openai.responses.create, model=MODEL, input="What should I pack?",
                conversation=conversation.id,
            )  # fmt: skip
        finally:
            await sdk(openai.close)
        items = await alice.all(conversations.items.list, conversation.id, order="asc", limit=1)
        assert [item.text for item in items[:3]] == [
            "I am planning a trip.", "To Lisbon.", "What should I pack?",
        ]  # fmt: skip
        assert items[-1].text == reply.output_text  # the answer joined the conversation

        item = await alice(conversations.items.retrieve, conversation.id, added_id)
        assert item.text == "To Lisbon."
        assert (await alice(conversations.items.delete, conversation.id, added_id)).id == (
            conversation.id
        )
        with pytest.raises(tollgate.NotFoundError):
            await alice(conversations.items.retrieve, conversation.id, added_id)
        assert (await sdk(sdk.client.conversations.retrieve, conversation.id)).id == conversation.id
        assert (await alice(conversations.delete, conversation.id)).deleted
        with pytest.raises(tollgate.NotFoundError):
            await alice(conversations.retrieve, conversation.id)
