"""Every Python snippet of sdk/README.md, run in order in one namespace against a live server:
the fake OpenAI and DeepSeek upstreams, localstripe, search on, and the example tool server.

The test stands in for what happens around the snippets in real life: it sets the environment
they read (the master key, the server's URL, the Stripe keys; the stripe module pointed at
localstripe), hands the tool's signing secret to the tool server once the snippet that
registers the tool has run, and lets a month of spend pass before the billing snippet."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from api.app import create_app
from api.billing.amounts import previous_period
from api.kit.time import utcnow
from api.settings import Settings
from tests.factories.billing import SECRET_KEY as STRIPE_KEY
from tests.factories.billing import WEBHOOK_SECRET, add_spend, invoices_of, month_moment
from tests.fakes.server import serve_in_thread
from tests.fakes.stripe import LocalStripe
from tests.integration.test_sdk import ToolServer, create_tenant, eventually, run_tool_server

pytestmark = pytest.mark.timeout(300)

README = Path(__file__).parents[2] / "sdk" / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets() -> list[str]:
    return BLOCK.findall(README.read_text())


@pytest.fixture
def base_url(gateway_settings: Settings, stripe_fake: LocalStripe) -> Iterator[str]:
    update: dict[str, object] = {
        "stripe_api_base": stripe_fake.url, "stripe_max_network_retries": 0,
        "search_enabled": True,
    }  # fmt: skip
    if gateway_settings.redis_url:
        update["qdrant_url"] = ":memory:"
    with serve_in_thread(create_app(gateway_settings.model_copy(update=update))) as url:
        yield url


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with run_tool_server() as server:
        yield server


def test_the_readme_has_a_snippet_for_each_step():
    code = "\n".join(snippets())
    steps = [
        "keys.create(", "tools.create(", "threads.messages.create(", "threads.messages.stream(",
        "search.query(", "jobs.submit(", "jobs.wait(", "usage.query(", "usage.export(",
        "billing.sync(", "BudgetExceededError",
    ]  # fmt: skip
    assert [step for step in steps if step not in code] == []


async def test_every_snippet_runs(
    base_url: str,
    tool_server: ToolServer,
    stripe_fake: LocalStripe,
    engine: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    tenant_id, master = create_tenant(base_url)
    for name, value in {
        "TOLLGATE_API_KEY": master, "TOLLGATE_BASE_URL": base_url,
        "TOOL_SERVER_URL": tool_server.url, "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(stripe, "api_base", stripe_fake.url)
    monkeypatch.setattr(stripe, "max_network_retries", 0)
    monkeypatch.chdir(tmp_path)

    ns: dict[str, Any] = {"__name__": "readme"}
    output = io.StringIO()
    blocks = snippets()
    for index, code in enumerate(blocks):
        if "billing.sync(" in code:  # a month passes: the user spent $2.00 in it
            period = previous_period(utcnow())
            await add_spend(engine, tenant_id, ns["key"].id, [2_000_000], month_moment(period))
        compiled = compile(code, f"{README}:snippet {index + 1}", "exec")
        with contextlib.redirect_stdout(output):
            await asyncio.to_thread(exec, compiled, ns)
        if "tool" in ns and "get_weather" not in tool_server.secrets:
            tool_server.secrets["get_weather"] = ns["tool"].signing_secret  # deployed with it

    client, alice, thread = ns["client"], ns["alice"], ns["thread"]
    assert ns["completion"].choices[0].message.content
    assert (ns["reply"].role, ns["answer"].role) == ("assistant", "assistant")
    tool_results = [
        block["content"]
        for message in alice.threads.messages.list(thread.id)
        if message.role == "tool"
        for block in message.content
        if block["name"] == "get_weather"
    ]
    assert tool_results == ["Lisbon: sunny, 24 °C"]  # verified by the example tool server
    assert ns["hits"].data
    assert {hit.thread_id for hit in ns["hits"].data} == {thread.id}
    assert (ns["job"].status, ns["job"].metadata) == ("succeeded", {"report": "weekly-plan"})
    assert ns["usage"].totals.requests >= 4
    assert (tmp_path / "usage.csv").read_text().startswith("id,key_id,key_name,")
    assert (ns["plan"].amount_cents, ns["run"].invoices) == (240, 1)  # $2.00 + 20 %
    invoices = await invoices_of(stripe_fake.url, ns["customer"].id)
    assert [invoice.id for invoice in invoices] == [ns["run"].records[0].stripe_invoice_id]
    answers = ns["answers"]
    assert all(answers[:3])
    assert answers[3] == "You have used today's free messages. Upgrade to keep chatting."
    assert dict(ns["report"])["alice@example.com"] > 0  # the async client's report
    assert "not_found" in output.getvalue()
    ns["openai"].close()
    client.close()


FRONT_PAGE = Path(__file__).parents[2] / "README.md"


async def test_the_front_pages_quickstart_runs(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """README.md's Python, with a tenant's master key as `MASTER` and the server's URL in
    TOLLGATE_BASE_URL (the README's server is `make run`'s on the default address)."""
    _, master = create_tenant(gateway_url)
    monkeypatch.setenv("TOLLGATE_BASE_URL", gateway_url)
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {"__name__": "readme", "MASTER": master}
    blocks = BLOCK.findall(FRONT_PAGE.read_text())
    assert blocks
    with contextlib.redirect_stdout(io.StringIO()):
        for index, code in enumerate(blocks):
            compiled = compile(code, f"{FRONT_PAGE}:snippet {index + 1}", "exec")
            await asyncio.to_thread(exec, compiled, ns)
    assert ns["reply"].choices[0].message.content
    client = ns["client"]
    # With Redis the ledger reaches the reports a moment after the answer; `make run` has none.
    by_key = await eventually(lambda: client.usage.query().by_key)
    assert [(row.key_name, row.requests) for row in by_key] == [("alice", 1)]
    ns["openai"].close()
    client.close()
