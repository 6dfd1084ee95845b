"""Stripe billing against localstripe: configuration, month-end sync, re-runs and crashes,
minimum carry-forward, runs, the month-end job (webhooks: test_billing_webhooks.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.billing import sync as billing_sync
from api.billing.amounts import previous_period
from api.billing.stripe_gateway import StripeGateway, gateway_factory
from api.db import create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.settings import Settings
from tests.conftest import SECRET_KEY, app_client
from tests.factories.billing import (
    SECRET_KEY as STRIPE_KEY,
)
from tests.factories.billing import (
    WEBHOOK_SECRET,
    add_spend,
    configure_stripe,
    create_customer,
    expected_cents,
    invoices_of,
    month_moment,
)
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.fakes.stripe import LocalStripe

PERIOD = previous_period(utcnow())


def _month_before(period: str) -> str:
    year, month = (int(p) for p in period.split("-"))
    year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return f"{year:04d}-{month:02d}"


@pytest.fixture
async def api(billing_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(billing_settings) as client:
        yield client


async def _sync(api: httpx.AsyncClient, tenant: TenantFixture, period: str) -> dict[str, Any]:
    response = await api.post("/v1/billing/sync", json={"period": period}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class _Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class _DyingGateway(StripeGateway):
    """The real gateway, killed at a chosen point."""

    die_after_invoice = False  # the invoice exists in Stripe, its id was never stored
    die_before_item = False  # the invoice id is stored, no item was sent

    async def create_invoice(self, **kwargs: Any) -> str:
        invoice_id = await super().create_invoice(**kwargs)
        if self.die_after_invoice:
            raise _Killed
        return invoice_id

    async def create_invoice_item(self, item: Any) -> str:
        if self.die_before_item:
            raise _Killed
        return await super().create_invoice_item(item)


class TestStripeAccount:
    async def test_secrets_are_stored_sealed_and_never_returned(
        self, api: httpx.AsyncClient, engine: AsyncEngine
    ):
        tenant = await create_tenant(api)
        before = (await api.get("/v1/billing/stripe", headers=tenant.headers)).json()
        assert before["configured"] is False
        assert before["webhook_path"] == f"/v1/billing/stripe/webhook/{tenant.id}"
        body = await configure_stripe(api, tenant, currency="EUR", markup_bps=2500)
        got = (await api.get("/v1/billing/stripe", headers=tenant.headers)).json()
        assert got == body
        assert got["configured"] is True
        assert got["livemode"] is False
        assert (got["currency"], got["markup_bps"], got["minimum_charge_cents"]) == (
            "eur",
            2500,
            50,
        )
        assert STRIPE_KEY not in str(got)
        assert WEBHOOK_SECRET not in str(got)
        async with engine.connect() as connection:
            row = (await connection.exec_driver_sql(
                "SELECT secret_key, webhook_secret FROM billing_stripe_accounts"
            )).one()  # fmt: skip
        assert STRIPE_KEY not in row[0]
        assert WEBHOOK_SECRET not in row[1]
        assert SecretBox(SECRET_KEY).open(row[0]) == STRIPE_KEY

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("secret_key", "pk_test_public"),
            ("webhook_secret", "nope"),
            ("currency", "jpy"),
            ("markup_bps", -1),
            ("markup_bps", 100_001),
        ],
    )
    async def test_bad_configuration_is_400(self, api: httpx.AsyncClient, field: str, value: Any):
        tenant = await create_tenant(api)
        body = {"secret_key": STRIPE_KEY, "webhook_secret": WEBHOOK_SECRET, field: value}
        response = await api.put("/v1/billing/stripe", json=body, headers=tenant.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field

    async def test_billing_routes_need_the_master_key(self, api: httpx.AsyncClient):
        tenant = await create_tenant(api)
        key = await create_key(api, tenant)
        for method, path in [
            ("GET", "/v1/billing/stripe"),
            ("PUT", "/v1/billing/stripe"),
            ("POST", "/v1/billing/sync"),
            ("GET", "/v1/billing/runs"),
            ("GET", f"/v1/billing/runs/{uuid.uuid4()}"),
        ]:
            body = {"period": PERIOD} if method == "POST" else None
            response = await api.request(method, path, json=body, headers=bearer(key["secret"]))
            assert response.status_code == 403, (path, response.text)
            assert response.json()["error"]["code"] == "insufficient_scope"


class TestSyncInput:
    @pytest.mark.parametrize("period", ["2026-13", "26-01", "2026-1", "last month", ""])
    async def test_malformed_period_is_400(self, api: httpx.AsyncClient, period: str):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant)
        response = await api.post(
            "/v1/billing/sync", json={"period": period}, headers=tenant.headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "period"

    async def test_current_and_future_months_are_refused(self, api: httpx.AsyncClient):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant)
        now = utcnow()
        for period in (f"{now.year:04d}-{now.month:02d}", f"{now.year + 1:04d}-01"):
            response = await api.post(
                "/v1/billing/sync", json={"period": period}, headers=tenant.headers
            )
            assert response.status_code == 400
            assert "not ended" in response.json()["error"]["message"]

    async def test_without_stripe_configured_is_400(self, api: httpx.AsyncClient):
        tenant = await create_tenant(api)
        response = await api.post(
            "/v1/billing/sync", json={"period": PERIOD}, headers=tenant.headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "stripe_not_configured"
        assert response.headers["x-should-retry"] == "false"


class TestMonthEndSync:
    async def test_one_invoice_per_customer_one_line_per_key_exact_cents(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant, markup_bps=1234)
        alice, bob = await create_customer(stripe_fake.url), await create_customer(stripe_fake.url)
        a1 = await create_key(api, tenant, name="alice-laptop", stripe_customer_id=alice)
        a2 = await create_key(api, tenant, name="alice-phone", stripe_customer_id=alice)
        b1 = await create_key(api, tenant, name="bob", stripe_customer_id=bob)
        unlinked = await create_key(api, tenant, name="no-customer")
        at = month_moment(PERIOD)
        spends = {a1["id"]: [1_234_567, 1, 999], a2["id"]: [3_000_001], b1["id"]: [7_654_321]}
        for key_id, micros in spends.items():
            await add_spend(engine, tenant.id, key_id, micros, at)
        await add_spend(engine, tenant.id, unlinked["id"], [5_000_000], at)
        # Spend outside the period is not billed with it.
        await add_spend(engine, tenant.id, a1["id"], [9_000_000], at + timedelta(days=40))
        await add_spend(engine, tenant.id, a1["id"], [9_000_000], at - timedelta(days=40))

        run = await _sync(api, tenant, PERIOD)
        assert (run["status"], run["customers"], run["invoices"], run["failed"]) == (
            "complete", 2, 2, 0,
        )  # fmt: skip
        window = {"start": month_moment(PERIOD, 1).isoformat(),
                  "end": (at + timedelta(days=20)).isoformat(), "group_by": "key"}  # fmt: skip
        usage = (await api.get("/v1/usage", params=window, headers=tenant.headers)).json()
        ledger = {row["key_id"]: row["cost_micros"] for row in usage["by_key"]}
        for customer, keys in ((alice, [a1, a2]), (bob, [b1])):
            invoices = await invoices_of(stripe_fake.url, customer)
            assert len(invoices) == 1
            invoice = invoices[0]
            assert invoice.status == "open"  # finalized: Stripe collects it
            assert invoice.metadata["tollgate_period"] == PERIOD
            lines = {line.metadata["tollgate_key_id"]: line for line in invoice.lines.data}
            assert set(lines) == {k["id"] for k in keys}
            for key in keys:
                assert lines[key["id"]].amount == expected_cents(ledger[key["id"]], 1234)
                assert ledger[key["id"]] == sum(spends[key["id"]])
            assert invoice.amount_due == sum(line.amount for line in lines.values())

        detail = (await api.get(f"/v1/billing/runs/{run['id']}", headers=tenant.headers)).json()
        assert detail["period"] == PERIOD
        assert detail["markup_bps"] == 1234
        assert {r["customer_id"]: r["state"] for r in detail["records"]} == {
            alice: "finalized", bob: "finalized",
        }  # fmt: skip
        for record in detail["records"]:
            assert record["stripe_invoice_id"].startswith("in_")
            assert all(line["stripe_invoice_item_id"].startswith("ii_") for line in record["lines"])
            assert record["amount_cents"] == sum(line["amount_cents"] for line in record["lines"])
        listed = (await api.get("/v1/billing/runs", headers=tenant.headers)).json()
        assert [r["id"] for r in listed["data"]] == [run["id"]]
        assert "records" not in listed["data"][0]

        # A re-run bills nothing twice.
        again = await _sync(api, tenant, PERIOD)
        assert again["id"] == run["id"]
        assert again["syncs"] == 2
        for customer in (alice, bob):
            assert len(await invoices_of(stripe_fake.url, customer)) == 1

    async def test_dry_run_writes_and_sends_nothing(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant)
        alice = await create_customer(stripe_fake.url)
        key = await create_key(api, tenant, stripe_customer_id=alice)
        await add_spend(engine, tenant.id, key["id"], [2_500_000], month_moment(PERIOD))
        response = await api.post(
            "/v1/billing/sync", json={"period": PERIOD, "dry_run": True}, headers=tenant.headers
        )
        assert response.status_code == 200, response.text
        plan = response.json()
        assert plan["object"] == "billing.plan"
        assert plan["amount_cents"] == 250
        assert plan["records"][0]["lines"][0]["spend_micros"] == 2_500_000
        assert await invoices_of(stripe_fake.url, alice) == []
        runs = (await api.get("/v1/billing/runs", headers=tenant.headers)).json()
        assert runs["data"] == []

    async def test_a_stripe_error_on_one_customer_does_not_stop_the_others(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant)
        alice = await create_customer(stripe_fake.url)
        good = await create_key(api, tenant, stripe_customer_id=alice)
        bad = await create_key(api, tenant, stripe_customer_id="cus_doesnotexist")
        for key in (good, bad):
            await add_spend(engine, tenant.id, key["id"], [4_000_000], month_moment(PERIOD))
        run = await _sync(api, tenant, PERIOD)
        assert (run["status"], run["invoices"], run["failed"]) == ("incomplete", 1, 1)
        detail = (await api.get(f"/v1/billing/runs/{run['id']}", headers=tenant.headers)).json()
        failed = next(r for r in detail["records"] if r["customer_id"] == "cus_doesnotexist")
        assert failed["state"] == "pending"
        assert failed["attempts"] == 1
        assert failed["last_error"]
        assert len(await invoices_of(stripe_fake.url, alice)) == 1

    async def test_another_tenants_run_is_404(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ):
        owner, other = await create_tenant(api), await create_tenant(api, "Other")
        await configure_stripe(api, owner)
        key = await create_key(
            api, owner, stripe_customer_id=await create_customer(stripe_fake.url)
        )
        await add_spend(engine, owner.id, key["id"], [1_000_000], month_moment(PERIOD))
        run = await _sync(api, owner, PERIOD)
        for headers in (other.headers,):
            response = await api.get(f"/v1/billing/runs/{run['id']}", headers=headers)
            assert response.status_code == 404
        assert (await api.get("/v1/billing/runs/nope", headers=owner.headers)).status_code == 404
        assert (await api.get("/v1/billing/runs", headers=other.headers)).json()["data"] == []


class TestCrashes:
    async def _setup(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ) -> tuple[TenantFixture, str, list[dict[str, Any]]]:
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant, markup_bps=500)
        customer = await create_customer(stripe_fake.url)
        keys = [await create_key(api, tenant, name=f"k{i}", stripe_customer_id=customer)
                for i in range(3)]  # fmt: skip
        for i, key in enumerate(keys):
            await add_spend(
                engine, tenant.id, key["id"], [1_000_003 * (i + 1)], month_moment(PERIOD)
            )
        return tenant, customer, keys

    async def _run(
        self, settings: Settings, engine: AsyncEngine, tenant: TenantFixture, **dying: bool
    ) -> billing_sync.SyncOutcome:
        base = gateway_factory(settings)

        def factory(secret_key: str) -> StripeGateway:
            gateway = base(secret_key)
            gateway.__class__ = _DyingGateway
            for name, value in dying.items():
                setattr(gateway, name, value)
            return gateway

        return await billing_sync.sync_period(
            create_sessionmaker(engine), SecretBox(SECRET_KEY), factory, uuid.UUID(tenant.id),
            PERIOD, now=utcnow() + (timedelta(minutes=6) if not dying else timedelta()),
        )  # fmt: skip

    async def _assert_billed_once(
        self, stripe_fake: LocalStripe, customer: str, keys: list[dict[str, Any]]
    ) -> None:
        invoices = await invoices_of(stripe_fake.url, customer)
        assert len(invoices) == 1
        lines = [line.metadata["tollgate_key_id"] for line in invoices[0].lines.data]
        assert sorted(lines) == sorted(k["id"] for k in keys)
        assert invoices[0].status == "open"

    async def test_killed_after_the_invoice_before_the_items_resumes(
        self, api, engine, stripe_fake, billing_settings
    ):
        tenant, customer, keys = await self._setup(api, engine, stripe_fake)
        with pytest.raises(_Killed):
            await self._run(billing_settings, engine, tenant, die_before_item=True)
        runs = (await api.get("/v1/billing/runs", headers=tenant.headers)).json()["data"]
        detail = (await api.get(f"/v1/billing/runs/{runs[0]['id']}", headers=tenant.headers)).json()
        assert detail["records"][0]["state"] == "invoice_created"
        assert detail["records"][0]["stripe_invoice_id"]
        # The killed sync's hold on the period lapses; until then a second sync is refused.
        response = await api.post(
            "/v1/billing/sync", json={"period": PERIOD}, headers=tenant.headers
        )
        assert response.status_code == 409
        outcome = await self._run(billing_settings, engine, tenant)
        assert outcome.failed == {}
        await self._assert_billed_once(stripe_fake, customer, keys)

    async def test_killed_before_the_invoice_id_was_stored_finds_it_again(
        self, api, engine, stripe_fake, billing_settings
    ):
        tenant, customer, keys = await self._setup(api, engine, stripe_fake)
        with pytest.raises(_Killed):
            await self._run(billing_settings, engine, tenant, die_after_invoice=True)
        assert len(await invoices_of(stripe_fake.url, customer)) == 1  # made, id not stored
        outcome = await self._run(billing_settings, engine, tenant)
        assert outcome.failed == {}
        await self._assert_billed_once(stripe_fake, customer, keys)


class TestCarryForward:
    async def test_amounts_under_the_minimum_are_billed_with_a_later_period(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
    ):
        tenant = await create_tenant(api)
        await configure_stripe(api, tenant)
        customer = await create_customer(stripe_fake.url)
        key = await create_key(api, tenant, stripe_customer_id=customer)
        first, second = _month_before(_month_before(PERIOD)), _month_before(PERIOD)
        await add_spend(engine, tenant.id, key["id"], [200_001], month_moment(first))  # 21 ¢
        await add_spend(engine, tenant.id, key["id"], [150_000], month_moment(second))  # 15 ¢
        await add_spend(engine, tenant.id, key["id"], [200_000], month_moment(PERIOD))  # 20 ¢
        run1 = await _sync(api, tenant, first)
        assert (run1["carried_forward"], run1["invoices"], run1["amount_cents"]) == (1, 0, 0)
        run2 = await _sync(api, tenant, second)  # 21 + 15 = 36 ¢ < 50 ¢: carried again
        assert run2["carried_forward"] == 1
        assert await invoices_of(stripe_fake.url, customer) == []
        run3 = await _sync(api, tenant, PERIOD)
        assert (run3["invoices"], run3["amount_cents"]) == (1, expected_cents(550_001, 0))
        detail = (await api.get(f"/v1/billing/runs/{run3['id']}", headers=tenant.headers)).json()
        line = detail["records"][0]["lines"][0]
        assert (line["spend_micros"], line["carried_in_micros"]) == (200_000, 350_001)
        assert line["amount_cents"] == 56  # rounded up once, on the sum
        invoices = await invoices_of(stripe_fake.url, customer)
        assert len(invoices) == 1
        assert invoices[0].amount_due == 56
        old = (await api.get(f"/v1/billing/runs/{run1['id']}", headers=tenant.headers)).json()
        assert old["records"][0]["state"] == "carried_forward"
        assert old["records"][0]["carried_into_id"] is not None


class TestMonthEndJob:
    async def test_the_cron_job_bills_last_month_for_every_configured_tenant(
        self, api: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe,
        billing_settings: Settings,
    ):  # fmt: skip
        from workers.jobs.billing import billing_month_end

        configured, bare = await create_tenant(api), await create_tenant(api, "No Stripe")
        await configure_stripe(api, configured)
        customer = await create_customer(stripe_fake.url)
        for tenant in (configured, bare):
            key = await create_key(api, tenant, stripe_customer_id=customer)
            await add_spend(engine, tenant.id, key["id"], [3_000_000], month_moment(PERIOD))
        ctx = {"settings": billing_settings, "sessionmaker": create_sessionmaker(engine)}
        result = await billing_month_end(ctx)
        assert result["period"] == PERIOD
        assert [t["tenant_id"] for t in result["tenants"]] == [configured.id]
        assert result["tenants"][0]["failed"] == {}
        assert len(await invoices_of(stripe_fake.url, customer)) == 1
        again = await billing_month_end(ctx)  # a second run bills nothing twice
        assert again["tenants"][0]["error"] is None
        assert len(await invoices_of(stripe_fake.url, customer)) == 1
