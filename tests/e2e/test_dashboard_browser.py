"""The dashboard in a real browser: Playwright drives Debian's headless Chromium through a
tenant's journey against a running Tollgate and the fake upstreams (SPEC §5.13).

A screenshot of every page lands in `test-artifacts/dashboard/<backend>/` (or under
`TOLLGATE_TEST_ARTIFACTS`), at desktop and at phone width.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories.chat import HELLO
from tests.factories.tenants import ADMIN_TOKEN, bearer
from tests.fakes.upstream import FakeUpstream

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused by a closed network; these keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PAGES = ["keys", "usage", "logs", "threads", "tools", "jobs", "billing", "providers", "settings"]
PHONE = {"width": 375, "height": 812}


@pytest.fixture
def browser(gateway_url: str) -> Iterator[object]:
    """After the server and its database are up: Playwright's sync API keeps an event loop
    running in this thread, where the database fixtures would start their own."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (tools/testenv.py does as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def artifacts(database_url: str) -> Path:
    root = Path(os.environ.get("TOLLGATE_TEST_ARTIFACTS", "test-artifacts"))
    folder = root / "dashboard" / database_url.split(":", 1)[0].split("+", 1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def tenant(gateway_url: str) -> dict[str, str]:
    response = httpx.post(
        f"{gateway_url}/admin/tenants", json={"name": "Browser Co"}, headers=bearer(ADMIN_TOKEN)
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def _wait_for(check: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    """Usage reaches the rollups a moment after the answer (the ledger writes in batches)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {seconds} s")
        time.sleep(0.25)


def _unlabelled_fields(page: object) -> list[str]:
    """Visible form fields that a screen reader could not name."""
    found: list[str] = page.evaluate(  # type: ignore[attr-defined]
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )
    return found


def _wider_than_the_screen(page: object) -> list[str]:
    """The elements that stick out of the viewport sideways (none: nothing scrolls sideways).
    A table may scroll inside its own box (`.scroll`); the page must not."""
    found: list[str] = page.evaluate(  # type: ignore[attr-defined]
        """() => {
            if (document.documentElement.scrollWidth <= window.innerWidth + 1) return [];
            return [...document.querySelectorAll('body *')]
                .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
                .filter(el => !el.closest('.scroll'))
                .map(el => el.outerHTML.slice(0, 120));
        }"""
    )
    return found


def test_a_tenants_journey(
    browser: object,
    gateway_url: str,
    tenant: dict[str, str],
    upstream: FakeUpstream,
    artifacts: Path,
) -> None:
    context = browser.new_context(  # type: ignore[attr-defined]
        base_url=gateway_url, accept_downloads=True
    )
    context.set_default_timeout(10_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gateway_url)
    page = context.new_page()
    shots = iter(range(1, 100))

    def shot(name: str) -> None:
        assert _unlabelled_fields(page) == [], name
        page.screenshot(path=str(artifacts / f"{next(shots):02d}-{name}.png"), full_page=True)

    # 1. Log in: the dashboard sends a stranger to the login form first.
    page.goto("/dashboard")
    assert page.url.endswith("/dashboard/login?next=/dashboard/keys")
    page.keyboard.press("Tab")  # the first stop is the skip link, for keyboard users
    assert page.evaluate("() => document.activeElement.className") == "skip"
    shot("login")
    page.get_by_label("Master key").fill("qlk_live_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "That is not a valid master key."
    page.get_by_label("Master key").fill(tenant["master_key"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/keys")
    cookie = next(c for c in context.cookies() if c["name"] == "__Host-tollgate_session")
    assert cookie["httpOnly"]
    assert cookie["secure"]
    assert cookie["sameSite"] == "Strict"

    # 2. Mint a key with a $0.05 monthly cap; its secret is shown once, and copies.
    page.get_by_label("Name").fill("journey-user")
    page.get_by_label("Monthly cap (USD)").fill("0.05")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret").input_value()
    assert re.fullmatch(r"qlk_live_\w+", secret)
    page.get_by_role("button", name="Copy").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    shot("key-created")
    page.goto("/dashboard/keys")
    assert secret not in page.content()  # never shown again
    row = page.locator("tr", has_text="journey-user")
    assert row.locator(".spend-figure").inner_text() == "$0.00 of $0.05"
    key_id = row.get_attribute("data-key-id")
    assert key_id is not None
    assert row.locator("progress").get_attribute("value") == "0"

    # 3. A request with the key through the API moves its spend bar by what it cost.
    answer = httpx.post(
        f"{gateway_url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers=bearer(secret),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    master = bearer(tenant["master_key"])

    def spent() -> int:
        read = httpx.get(f"{gateway_url}/v1/keys/{key_id}", headers=master).json()
        return int(read["spend_micros"])

    _wait_for(lambda: spent() > 0, "the request's cost")
    cost = spent()

    def bar_moved() -> bool:
        page.reload()
        value = page.locator("tr", has_text="journey-user").locator("progress")
        return value.get_attribute("value") == str(cost)

    _wait_for(bar_moved, "the spend bar")
    assert page.locator("progress").first.get_attribute("max") == "50000"
    shot("keys")

    # 4. Set a limit: a $2 cap and 100 requests a day.
    page.get_by_role("link", name="journey-user").click()
    page.get_by_label("Monthly spend cap (USD, empty for none)").fill("2")
    page.get_by_label("Metric").select_option("requests")
    page.get_by_label("Period").select_option("day")
    page.get_by_label("Max", exact=True).fill("100")
    page.get_by_role("button", name="Save limits").click()
    assert page.get_by_role("status").inner_text() == "Limits saved."
    limits = httpx.get(f"{gateway_url}/v1/keys/{key_id}", headers=master).json()["limits"]
    assert {(lim["metric"], lim["period"], lim["max"]) for lim in limits} == {
        ("spend_usd", "month", 2.0),
        ("requests", "day", 100),
    }
    shot("key")

    # 5. Rotate: a new secret, shown once; the old one is refused at once (no grace).
    page.get_by_role("button", name="Rotate secret").click()
    rotated = page.locator("#secret").input_value()
    assert rotated != secret
    assert rotated.startswith("qlk_live_")
    shot("key-rotated")
    old = httpx.get(f"{gateway_url}/v1/keys/self", headers=bearer(secret))
    assert old.status_code == 401
    assert httpx.get(f"{gateway_url}/v1/keys/self", headers=bearer(rotated)).status_code == 200

    # 6. Export CSV from the usage page: the request is in it, at its cost.
    page.get_by_role("link", name="Usage").click()
    shot("usage")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    exported = Path(download_info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(exported)))
    mine = [row for row in rows if row["key_id"] == key_id]
    assert len(mine) == 1
    assert int(mine[0]["cost_micros"]) == cost

    # 7. The request log entry: model, account and cost.
    page.get_by_role("link", name="Request log").click()
    shot("logs")
    page.locator("tbody tr a").first.click()
    entry = page.locator("main").inner_text()
    assert "gpt-4o" in entry
    assert "openai" in entry
    shot("log-entry")

    # Every page renders, labelled, at desktop and phone widths without sideways scrolling.
    for name in PAGES:
        page.goto(f"/dashboard/{name}")
        assert page.locator("h1").count() == 1, name
        shot(name)
    page.set_viewport_size(PHONE)
    for name in ("keys", "usage", "logs", "settings"):
        page.goto(f"/dashboard/{name}")
        assert _wider_than_the_screen(page) == [], f"{name} scrolls sideways at phone width"
        shot(f"{name}-phone")

    # 8. Log out: the session is gone, and the dashboard sends us back to the login form.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/login")
    page.goto(f"/dashboard/keys/{key_id}")
    assert "/dashboard/login?next=" in page.url
    context.close()
