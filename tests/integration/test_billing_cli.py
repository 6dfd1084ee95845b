"""`tollgate billing sync` as an operator runs it: a real process against the test database
and localstripe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.billing.amounts import previous_period
from api.kit.time import utcnow
from api.settings import Settings
from tests.conftest import SECRET_KEY, app_client
from tests.factories.billing import (
    add_spend,
    configure_stripe,
    create_customer,
    invoices_of,
    month_moment,
)
from tests.factories.tenants import create_key, create_tenant
from tests.fakes.stripe import LocalStripe

PERIOD = previous_period(utcnow())
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def api(billing_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(billing_settings) as client:
        yield client


def _cli(args: list[str], database_url: str, stripe_url: str, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(
        PYTHONPATH=str(ROOT), TOLLGATE_DATA_DIR=str(tmp_path), TOLLGATE_DATABASE_URL=database_url,
        TOLLGATE_SECRET_KEY=SECRET_KEY, TOLLGATE_STRIPE_API_BASE=stripe_url,
        TOLLGATE_STRIPE_MAX_NETWORK_RETRIES="0",
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "api", "billing", "sync", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


class TestBillingSyncCommand:
    async def test_dry_run_then_sync_then_rerun(
        self, api, engine, database_url: str, stripe_fake: LocalStripe, tmp_path: Path
    ):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant, markup_bps=1000)
        customers = [await create_customer(stripe_fake.url) for _ in range(3)]
        for customer in customers:
            key = await create_key(api, tenant, stripe_customer_id=customer)
            await add_spend(engine, tenant.id, key["id"], [1_000_000], month_moment(PERIOD))

        dry = _cli(["--period", PERIOD, "--dry-run"], database_url, stripe_fake.url, tmp_path)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert (planned["tenant_id"], planned["dry_run"], planned["customers"]) == (
            tenant.id, True, 3,
        )  # fmt: skip
        assert planned["amount_cents"] == 3 * 110
        assert [len(await invoices_of(stripe_fake.url, c)) for c in customers] == [0, 0, 0]

        args = ["--period", PERIOD, "--tenant", tenant.id]
        done = _cli(args, database_url, stripe_fake.url, tmp_path)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["customers"], report["failed"], report["amount_cents"]) == (3, {}, 330)
        assert f"tenant {tenant.id}" in done.stderr  # the progress bar (bare without a TTY)
        again = _cli(args, database_url, stripe_fake.url, tmp_path)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["already_billed"] == 3
        assert [len(await invoices_of(stripe_fake.url, c)) for c in customers] == [1, 1, 1]

    async def test_errors_are_one_line_and_non_zero(
        self, api, database_url: str, stripe_fake: LocalStripe, tmp_path: Path
    ):
        tenant = await create_tenant(api)
        bad_period = _cli(["--period", "2026-13"], database_url, stripe_fake.url, tmp_path)
        assert bad_period.returncode == 1
        assert bad_period.stderr.strip().splitlines() == [
            "error: period must be a month written YYYY-MM, e.g. 2026-10."
        ]
        unconfigured = _cli(["--period", PERIOD, "--tenant", tenant.id], database_url,
                            stripe_fake.url, tmp_path)  # fmt: skip
        assert unconfigured.returncode == 1
        assert "Stripe is not configured" in json.loads(unconfigured.stdout)["error"]
        bad_tenant = _cli(["--period", PERIOD, "--tenant", "x"], database_url, stripe_fake.url,
                          tmp_path)  # fmt: skip
        assert bad_tenant.returncode == 2
        assert "--tenant" in bad_tenant.stderr
