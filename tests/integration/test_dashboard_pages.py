"""The dashboard's threads, tools, jobs, billing, providers and settings pages, as a browser
uses them: each page shows what the JSON API has, each form changes what the API then returns,
another tenant's ids are 404 pages, and a post without the session's CSRF token is refused."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.billing.amounts import previous_period
from api.kit.time import utcnow
from api.settings import Settings
from tests.dashboard import dashboard_client, sign_in
from tests.factories.billing import (
    SECRET_KEY as STRIPE_KEY,
)
from tests.factories.billing import (
    WEBHOOK_SECRET,
    add_spend,
    configure_stripe,
    create_customer,
    expected_cents,
    month_moment,
)
from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.fakes.stripe import LocalStripe
from tests.fakes.tool_models import ToolHooks
from tests.fakes.upstream import FakeUpstream

CITY = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
PERIOD = previous_period(utcnow())
SECRET_FIELD = re.compile(r'id="secret" type="text" readonly value="([^"]+)"')


@pytest.fixture(scope="module")
def tool_hooks() -> Iterator[ToolHooks]:
    hooks = ToolHooks()
    hooks.start()
    yield hooks
    hooks.stop()


@pytest.fixture
def hooks(tool_hooks: ToolHooks) -> Iterator[ToolHooks]:
    tool_hooks.reset()
    yield tool_hooks
    tool_hooks.reset()


@pytest.fixture
async def web(gateway_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard and the JSON API on one client; live keys answered by the fake upstream,
    test keys by the mock, webhooks on loopback allowed."""
    async with dashboard_client(gateway_settings) as client:
        yield client


@pytest.fixture
async def billing_web(billing_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard_client(billing_settings) as client:
        yield client


async def _signed_in(client: httpx.AsyncClient, name: str = "Acme") -> tuple[TenantFixture, str]:
    tenant = await create_tenant(client, name)
    return tenant, await sign_in(client, tenant.master_key)


async def _ok(client: httpx.AsyncClient, path: str) -> str:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.text


async def _tool(
    client: httpx.AsyncClient, tenant: TenantFixture, name: str, url: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": name, "description": f"The {name} tool", "input_schema": CITY,
            "webhook_url": url, **fields}  # fmt: skip
    response = await client.post("/v1/tools", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    tool: dict[str, Any] = response.json()
    return tool


async def _thread(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    response = await client.post("/v1/threads", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    thread_id: str = response.json()["id"]
    return thread_id


async def _turn(
    client: httpx.AsyncClient, headers: dict[str, str], thread_id: str, content: str, **more: Any
) -> None:
    response = await client.post(
        f"/v1/threads/{thread_id}/messages",
        json={"model": "gpt-4o-mini", "content": content, **more},
        headers=headers,
    )
    assert response.status_code == 200, response.text


async def _finished_job(
    client: httpx.AsyncClient, job_id: str, headers: dict[str, str]
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for _ in range(300):
        body = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job never finished: {body}")


async def _submit_job(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    job = {"endpoint": "/v1/chat/completions", "body": {"model": "gpt-4o", "messages": HELLO}}
    response = await client.post("/v1/jobs", json=job, headers=headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _provider_rows(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-provider="(\w+)">(.*?)</tr>', page, re.S))


def _next_link(page: str, pattern: str) -> str:
    found = re.search(rf'href="({re.escape(pattern)}\?cursor=[^"]+)"', page)
    assert found is not None, "no link to the next page"
    return html.unescape(found.group(1))


class TestThreads:
    async def test_the_list_shows_the_apis_threads_newest_first_a_page_at_a_time(
        self, web: httpx.AsyncClient
    ):
        tenant, _ = await _signed_in(web)
        key = await create_key(web, tenant, name="support-bot", test=True)
        created = [
            await _thread(web, bearer(key["secret"]), system=f"Prompt {i}") for i in range(3)
        ]
        listed = (await web.get("/v1/threads", headers=tenant.headers)).json()["data"]
        page = await _ok(web, "/dashboard/threads")
        assert re.findall(r'data-thread-id="([^"]+)"', page) == [t["id"] for t in listed]
        assert [t["id"] for t in listed] == created[::-1]
        assert "support-bot" in page
        assert "Prompt 2" in page
        first = await _ok(web, "/dashboard/threads?limit=2")
        assert re.findall(r'data-thread-id="([^"]+)"', first) == created[:0:-1]
        rest = await _ok(web, _next_link(first, "/dashboard/threads"))
        assert re.findall(r'data-thread-id="([^"]+)"', rest) == created[:1]
        assert "Older threads" not in rest

    async def test_a_transcript_shows_text_tool_calls_and_tool_results(
        self, web: httpx.AsyncClient, hooks: ToolHooks
    ):
        tenant, _ = await _signed_in(web)
        tool = await _tool(web, tenant, "lookup_city", hooks.url("lookup_city"))
        hooks.secrets["lookup_city"] = tool["signing_secret"]
        headers = bearer((await create_key(web, tenant, test=True))["secret"])
        thread_id = await _thread(web, headers, system="Use the tools.")
        await _turn(web, headers, thread_id, "Where is <Paris>?", tools=["lookup_city"])
        listed = await web.get(f"/v1/threads/{thread_id}/messages", headers=headers)
        messages = listed.json()["data"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
        page = await _ok(web, f"/dashboard/threads/{thread_id}")
        assert re.findall(r'class="turn turn-(\w+)"', page) == [m["role"] for m in messages]
        assert "Where is &lt;Paris&gt;?" in page  # the user's text, escaped
        assert "<Paris>" not in page
        text = html.unescape(page)
        assert "Use the tools." in text
        assert "Calls tool lookup_city" in re.sub(r"</?code>", "", text)
        call = messages[1]["content"][0]
        assert call["type"] == "tool_use"
        assert call["id"] in text
        assert '"name": "example"' in text  # the call's arguments
        assert messages[2]["content"][0]["content"] in text  # the webhook's answer
        assert messages[3]["content"][0]["text"] in text
        assert f"{messages[3]['usage']['input_tokens']:,} in" in text


class TestTools:
    async def test_the_list_shows_each_tool_and_no_secret(self, web: httpx.AsyncClient):
        tenant, _ = await _signed_in(web)
        first = await _tool(web, tenant, "lookup_city", "http://127.0.0.1:9/city")
        second = await _tool(web, tenant, "get_weather", "http://127.0.0.1:9/weather",
                             timeout_ms=1500)  # fmt: skip
        page = await _ok(web, "/dashboard/tools")
        assert re.findall(r'data-tool-id="([^"]+)"', page) == [second["id"], first["id"]]
        for shown in ("lookup_city", "The get_weather tool", "http://127.0.0.1:9/weather",
                      "1,500 ms", "30,000 ms"):  # fmt: skip
            assert shown in page
        assert first["signing_secret"] not in page
        assert second["signing_secret"] not in page

    async def test_rotating_shows_the_new_secret_once_and_calls_are_signed_with_it(
        self, web: httpx.AsyncClient, hooks: ToolHooks
    ):
        tenant, csrf = await _signed_in(web)
        tool = await _tool(web, tenant, "lookup_city", hooks.url("lookup_city"))
        old = tool["signing_secret"]
        rotated = await web.post(
            f"/dashboard/tools/{tool['id']}/rotate-secret", data={"csrf": csrf}
        )
        assert rotated.status_code == 200, rotated.text
        found = SECRET_FIELD.search(rotated.text)
        assert found is not None
        new = found.group(1)
        assert new.startswith("whsec_")
        assert new != old
        again = await _ok(web, "/dashboard/tools")
        assert new not in again
        assert old not in again
        # The webhook receiver checks each call's signature against the secret it knows.
        headers = bearer((await create_key(web, tenant, test=True))["secret"])
        thread_id = await _thread(web, headers)
        hooks.secrets["lookup_city"] = old
        await _turn(web, headers, thread_id, "first", tools=["lookup_city"])
        hooks.secrets["lookup_city"] = new
        await _turn(web, headers, thread_id, "second", tools=["lookup_city"])
        assert [valid for _, _, valid, _ in hooks.calls] == [False, True]


class TestJobs:
    async def test_the_pages_show_status_times_and_cost(
        self, web: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, _ = await _signed_in(web)
        headers = bearer((await create_key(web, tenant))["secret"])
        job_id = await _submit_job(web, headers)
        done = await _finished_job(web, job_id, headers)
        assert done["status"] == "succeeded", done
        assert done["usage"]["cost_micros"] == 14093
        page = await _ok(web, "/dashboard/jobs")
        assert re.findall(r'data-job-id="([^"]+)"', page) == [job_id]
        for shown in ("/v1/chat/completions", "succeeded", "$0.014093"):
            assert shown in page
        assert page.count(" UTC") == 2  # created and finished
        detail = html.unescape(await _ok(web, f"/dashboard/jobs/{job_id}"))
        assert "2,417 tokens in, 1,093 out, $0.014093" in detail
        assert done["result"]["id"] in detail
        assert job_id not in await _ok(web, "/dashboard/jobs?status=failed")
        assert job_id in await _ok(web, "/dashboard/jobs?status=succeeded")
        assert (await web.get("/dashboard/jobs?status=bogus")).status_code == 400


class TestProviders:
    async def test_each_providers_status_and_only_the_last_four(
        self, web: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, _ = await _signed_in(web)
        own_key = "sk-tenant-own-key-1234"
        body = {"api_key": own_key, "base_url": upstream.openai_base_url}
        stored = await web.put("/v1/providers/openai", json=body, headers=tenant.headers)
        assert stored.status_code == 200, stored.text
        page = await _ok(web, "/dashboard/providers")
        rows = _provider_rows(page)
        assert set(rows) == {"openai", "anthropic", "gemini", "deepseek"}
        assert "your key" in rows["openai"]
        assert "…1234" in rows["openai"]
        assert upstream.openai_base_url in rows["openai"]
        assert "operator's account" in rows["anthropic"]
        assert own_key not in page
        disabled = {**body, "enabled": False}
        assert (await web.put("/v1/providers/openai", json=disabled,
                              headers=tenant.headers)).status_code == 200  # fmt: skip
        assert "disabled" in _provider_rows(await _ok(web, "/dashboard/providers"))["openai"]


class TestSettings:
    async def test_each_group_saved_is_what_the_api_returns(self, web: httpx.AsyncClient):
        tenant, csrf = await _signed_in(web)
        posts = {
            "failover": '{"enabled": true}',
            "routing": '{\n  "strategy": "cost"\n}',
            "limits": '[{"metric": "tokens", "period": "day", "max": 5000}]',
            "alerts": '{"webhook_url": null, "emails": ["ops@example.com"]}',
            "retention": '{"trace_days": 7, "log_days": null}',
        }
        for group, value in posts.items():
            response = await web.post(
                "/dashboard/settings", data={"csrf": csrf, "group": group, "value": value}
            )
            assert response.status_code == 303, response.text
            assert response.headers["location"] == f"/dashboard/settings?done={group}"
        shown = (await web.get("/v1/settings", headers=tenant.headers)).json()
        assert shown["failover"] == {"enabled": True}
        assert shown["routing"] == {"strategy": "cost"}
        assert [(lim["metric"], lim["period"], lim["max"]) for lim in shown["limits"]] == [
            ("tokens", "day", 5000)
        ]
        assert shown["alerts"]["emails"] == ["ops@example.com"]
        assert shown["retention"] == {"trace_days": 7, "log_days": None}
        page = html.unescape(await _ok(web, "/dashboard/settings?done=routing"))
        assert "Routing saved." in page
        assert '"strategy": "cost"' in page
        assert '"metric": "tokens"' in page
        assert "signing_secret_set" not in page  # shown as a sentence, not as a field to post

    async def test_saved_limits_apply_to_keys_already_in_use(
        self, web: httpx.AsyncClient, upstream: FakeUpstream
    ):
        """The save runs the API's after-commit hooks: a key cached before the change is held
        to the new tenant limit at once."""
        tenant, csrf = await _signed_in(web)
        secret = (await create_key(web, tenant))["secret"]
        chat = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5}
        first = await web.post("/v1/chat/completions", json=chat, headers=bearer(secret))
        assert first.status_code == 200  # the key is cached now, with no tenant limit
        value = '[{"metric": "requests", "period": "day", "max": 1}]'
        response = await web.post(
            "/dashboard/settings", data={"csrf": csrf, "group": "limits", "value": value}
        )
        assert response.status_code == 303, response.text
        again = await web.post("/v1/chat/completions", json=chat, headers=bearer(secret))
        assert again.status_code == 402
        # The refusal fires the limit's 100 % alert in the background; it is awaited here so
        # the app does not stop in the middle of writing it.
        for _ in range(300):
            alerts = (await web.get("/v1/alerts", headers=tenant.headers)).json()["data"]
            if alerts and alerts[0]["attempts"] >= 1:
                break
            await asyncio.sleep(0.05)
        assert [(a["scope"], a["threshold"]) for a in alerts] == [("tenant", 100)]

    @pytest.mark.parametrize(
        ("group", "value", "named"),
        [
            ("routing", '{"strategy": "cost",}', "routing: not valid JSON"),
            ("failover", "", "failover: enter a JSON value"),
            ("cache", '{"ttl_seconds": NaN}', "NaN is not a number JSON allows"),
            ("routing", '{"strategy": "fastest"}', "routing.strategy"),
            ("failover", '{"enabled": true, "to": "x"}', "Unknown field: failover.to"),
            ("limits", '[{"metric": "tokens", "period": "week", "max": 1}]', "limits[0].period"),
        ],
    )
    async def test_bad_json_or_a_schema_error_is_a_400_page_naming_it(
        self, web: httpx.AsyncClient, group: str, value: str, named: str
    ):
        tenant, csrf = await _signed_in(web)
        before = (await web.get("/v1/settings", headers=tenant.headers)).json()
        response = await web.post(
            "/dashboard/settings", data={"csrf": csrf, "group": group, "value": value}
        )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/html")
        page = html.unescape(response.text)
        assert named in page
        if value:
            assert value in page  # the text as typed, to fix
        assert (await web.get("/v1/settings", headers=tenant.headers)).json() == before

    async def test_an_error_the_save_itself_finds_is_its_400_and_nothing_is_saved(
        self, web: httpx.AsyncClient
    ):
        tenant, csrf = await _signed_in(web)
        limit = '{"metric": "tokens", "period": "day", "max": 1}'
        response = await web.post(
            "/dashboard/settings",
            data={"csrf": csrf, "group": "limits", "value": f"[{limit}, {limit}]"},
        )
        assert response.status_code == 400
        assert "limits has two entries" in html.unescape(response.text)
        assert (await web.get("/v1/settings", headers=tenant.headers)).json()["limits"] == []

    async def test_a_new_alert_signing_secret_is_shown_once(self, web: httpx.AsyncClient):
        tenant, csrf = await _signed_in(web)
        response = await web.post("/dashboard/settings/webhook-secret", data={"csrf": csrf})
        assert response.status_code == 200, response.text
        found = SECRET_FIELD.search(response.text)
        assert found is not None
        assert found.group(1).startswith("whsec_")
        shown = (await web.get("/v1/settings", headers=tenant.headers)).json()
        assert shown["alerts"]["signing_secret_set"] is True
        assert found.group(1) not in await _ok(web, "/dashboard/settings")


class TestBilling:
    async def test_the_stripe_form_saves_the_account_and_shows_only_the_last_four(
        self, billing_web: httpx.AsyncClient
    ):
        tenant, csrf = await _signed_in(billing_web)
        page = await _ok(billing_web, "/dashboard/billing")
        assert "Not set up" in page
        assert f"/v1/billing/stripe/webhook/{tenant.id}" in page
        bad = await billing_web.post(
            "/dashboard/billing/stripe",
            data={"csrf": csrf, "secret_key": "pk_test_public", "webhook_secret": WEBHOOK_SECRET},
        )
        assert bad.status_code == 400
        assert "secret_key" in bad.text
        form = {"csrf": csrf, "secret_key": STRIPE_KEY, "webhook_secret": WEBHOOK_SECRET,
                "currency": "eur", "markup_bps": "2500"}  # fmt: skip
        saved = await billing_web.post("/dashboard/billing/stripe", data=form)
        assert saved.status_code == 303, saved.text
        account = (await billing_web.get("/v1/billing/stripe", headers=tenant.headers)).json()
        assert (account["configured"], account["currency"], account["markup_bps"]) == (
            True, "eur", 2500,
        )  # fmt: skip
        page = await _ok(billing_web, saved.headers["location"])
        assert "Stripe settings saved." in page
        assert f"…{STRIPE_KEY[-4:]}" in page
        assert "EUR" in page
        assert STRIPE_KEY not in page
        assert WEBHOOK_SECRET not in page

    async def test_run_sync_now_dry_runs_then_bills_and_shows_each_customers_state(
        self, billing_web: httpx.AsyncClient, stripe_fake: LocalStripe, engine: AsyncEngine
    ):
        tenant, csrf = await _signed_in(billing_web)
        await configure_stripe(billing_web, tenant)
        customer = await create_customer(stripe_fake.url)
        key = await create_key(billing_web, tenant, name="acme-app", stripe_customer_id=customer)
        await add_spend(engine, tenant.id, key["id"], [1_234_567], month_moment(PERIOD))
        cents = expected_cents(1_234_567, 0)
        amount = f"{cents // 100}.{cents % 100:02d} USD"

        dry = await billing_web.post(
            "/dashboard/billing/sync", data={"csrf": csrf, "period": PERIOD, "dry_run": "on"}
        )
        assert dry.status_code == 200, dry.text
        assert f"Dry run of {PERIOD}" in dry.text
        assert customer in dry.text
        assert amount in dry.text
        runs = (await billing_web.get("/v1/billing/runs", headers=tenant.headers)).json()
        assert runs["data"] == []  # a dry run writes nothing

        real = await billing_web.post(
            "/dashboard/billing/sync", data={"csrf": csrf, "period": PERIOD}
        )
        assert real.status_code == 303, real.text
        runs = (await billing_web.get("/v1/billing/runs", headers=tenant.headers)).json()
        assert len(runs["data"]) == 1
        run_id = runs["data"][0]["id"]
        assert real.headers["location"] == f"/dashboard/billing/runs/{run_id}?done=synced"
        run = (await billing_web.get(f"/v1/billing/runs/{run_id}", headers=tenant.headers)).json()
        record = run["records"][0]
        assert record["stripe_invoice_id"]
        page = await _ok(billing_web, real.headers["location"])
        assert "Sync finished." in page
        for shown in (customer, record["state"], record["stripe_invoice_id"], amount, "acme-app"):
            assert shown in page
        listing = await _ok(billing_web, "/dashboard/billing")
        assert re.findall(r'data-run-id="([^"]+)"', listing) == [run_id]
        assert PERIOD in listing

    async def test_syncing_without_a_stripe_account_is_an_error_page(
        self, billing_web: httpx.AsyncClient
    ):
        _, csrf = await _signed_in(billing_web)
        response = await billing_web.post(
            "/dashboard/billing/sync", data={"csrf": csrf, "period": PERIOD, "dry_run": "on"}
        )
        assert 400 <= response.status_code < 500
        assert "Stripe" in response.text

    async def test_another_tenants_run_is_a_404_page(self, billing_web: httpx.AsyncClient):
        owner = await create_tenant(billing_web, "owner")
        await configure_stripe(billing_web, owner)
        synced = await billing_web.post(
            "/v1/billing/sync", json={"period": PERIOD}, headers=owner.headers
        )
        assert synced.status_code == 200, synced.text
        run_id = synced.json()["id"]
        await _signed_in(billing_web, "intruder")
        response = await billing_web.get(f"/dashboard/billing/runs/{run_id}")
        assert response.status_code == 404
        assert PERIOD not in response.text
        assert run_id not in await _ok(billing_web, "/dashboard/billing")


class TestIsolationAndForgery:
    async def test_another_tenants_thread_tool_and_job_are_404_pages(self, web: httpx.AsyncClient):
        owner = await create_tenant(web, "owner")
        headers = bearer((await create_key(web, owner, test=True))["secret"])
        thread_id = await _thread(web, headers, system="The owner's private prompt")
        tool = await _tool(web, owner, "owner_tool", "http://127.0.0.1:9/hook")
        job_id = await _submit_job(web, headers)
        _, csrf = await _signed_in(web, "intruder")
        thread = await web.get(f"/dashboard/threads/{thread_id}")
        assert thread.status_code == 404
        assert "private prompt" not in thread.text
        job = await web.get(f"/dashboard/jobs/{job_id}")
        assert job.status_code == 404
        assert "/v1/chat/completions" not in job.text
        rotated = await web.post(f"/dashboard/tools/{tool['id']}/rotate-secret",
                                 data={"csrf": csrf})  # fmt: skip
        assert rotated.status_code == 404
        assert SECRET_FIELD.search(rotated.text) is None
        unchanged = (await web.get(f"/v1/tools/{tool['id']}", headers=owner.headers)).json()
        assert unchanged["updated_at"] == tool["updated_at"]
        assert thread_id not in await _ok(web, "/dashboard/threads")
        assert "owner_tool" not in await _ok(web, "/dashboard/tools")
        assert job_id not in await _ok(web, "/dashboard/jobs")
        assert (await web.get("/dashboard/threads/not-an-id")).status_code == 404

    async def test_a_post_without_the_csrf_token_is_refused(self, web: httpx.AsyncClient):
        tenant, _ = await _signed_in(web)
        tool = await _tool(web, tenant, "lookup_city", "http://127.0.0.1:9/hook")
        before = (await web.get("/v1/settings", headers=tenant.headers)).json()
        posts = [
            ("/dashboard/settings", {"group": "failover", "value": '{"enabled": true}'}),
            (f"/dashboard/tools/{tool['id']}/rotate-secret", {}),
            ("/dashboard/settings/webhook-secret", {}),
            ("/dashboard/billing/sync", {"period": PERIOD, "dry_run": "on"}),
            ("/dashboard/billing/stripe", {"secret_key": STRIPE_KEY,
                                           "webhook_secret": WEBHOOK_SECRET}),
        ]  # fmt: skip
        for path, data in posts:
            for forged in (data, {**data, "csrf": "not-the-token"}):
                response = await web.post(path, data=forged)
                assert response.status_code == 403, (path, response.text)
                assert SECRET_FIELD.search(response.text) is None
        assert (await web.get("/v1/settings", headers=tenant.headers)).json() == before
        account = (await web.get("/v1/billing/stripe", headers=tenant.headers)).json()
        assert account["configured"] is False

    async def test_the_pages_need_a_session(self, web: httpx.AsyncClient):
        for name in ("threads", "tools", "jobs", "billing", "providers", "settings"):
            path = f"/dashboard/{name}"
            response = await web.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/dashboard/login?next=")
