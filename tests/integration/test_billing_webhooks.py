"""Stripe's webhooks end to end: Tollgate served on loopback, localstripe paying invoices and
delivering its own signed events, a failed payment suspending the customer's keys (402) and a
payment restoring them, the tenant told through its signed alerts webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import stripe

from api.app import create_app
from api.billing.amounts import previous_period
from api.kit.time import utcnow
from api.settings import Settings
from tests.factories.billing import (
    WEBHOOK_SECRET,
    add_spend,
    configure_stripe,
    create_customer,
    invoices_of,
    month_moment,
)
from tests.factories.chat import HELLO
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.fakes.server import serve_in_thread
from tests.fakes.stripe import LocalStripe
from tests.fakes.upstream import FakeUpstream

PERIOD = previous_period(utcnow())


@pytest.fixture
async def served(billing_settings: Settings) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    with serve_in_thread(create_app(billing_settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield url, client


def _signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def _eventually(check: Callable[[], Any], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def _chat(http: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 5},
        headers=bearer(secret),
    )


class TestStripeWebhooks:
    async def test_failed_payment_suspends_and_payment_restores(
        self, served, engine, stripe_fake: LocalStripe, upstream: FakeUpstream
    ):
        url, http = served
        tenant = await create_tenant(http)
        await configure_stripe(http, tenant)
        await http.put("/v1/settings", json={"alerts": {"webhook_url": upstream.hooks_url}},
                       headers=tenant.headers)  # fmt: skip
        notice_secret = (
            await http.post("/v1/settings/webhook-secret", headers=tenant.headers)
        ).json()["secret"]
        customer = await create_customer(stripe_fake.url)
        key = await create_key(http, tenant, test=True, stripe_customer_id=customer)
        bystander = await create_key(http, tenant, test=True)
        await add_spend(engine, tenant.id, key["id"], [12_345_678], month_moment(PERIOD))
        run = (await http.post("/v1/billing/sync", json={"period": PERIOD},
                               headers=tenant.headers)).json()  # fmt: skip
        assert run["invoices"] == 1
        invoice_id = (await invoices_of(stripe_fake.url, customer))[0].id
        hook = f"/v1/billing/stripe/webhook/{tenant.id}"
        async with httpx.AsyncClient() as raw:
            config = {"url": url + hook, "secret": WEBHOOK_SECRET}
            registered = await raw.post(f"{stripe_fake.url}/_config/webhooks/tollgate", json=config)
            assert registered.status_code == 200
        assert (await _chat(http, key["secret"])).status_code == 200  # cached as active

        # localstripe does not emit invoice.payment_failed for a declined card: Stripe would.
        failed = {"id": "evt_failed_1", "object": "event", "type": "invoice.payment_failed",
                  "data": {"object": {"id": invoice_id, "object": "invoice"}}}  # fmt: skip
        body, headers = _signed(failed)
        response = await http.post(hook, content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["handled"] is True
        refused = await _chat(http, key["secret"])
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "payment_required"
        assert (await http.get("/v1/keys/self", headers=bearer(key["secret"]))).status_code == 402
        assert (await _chat(http, bystander["secret"])).status_code == 200
        detail = (await http.get(f"/v1/billing/runs/{run['id']}", headers=tenant.headers)).json()
        assert detail["records"][0]["state"] == "payment_failed"

        async def told(kind: str) -> bool:
            return any(json.loads(b)["type"] == kind for _, b in upstream.hooks)

        await _eventually(lambda: told("billing.invoice.payment_failed"))
        headers_seen, raw_notice = next(
            (h, b) for h, b in upstream.hooks
            if json.loads(b)["type"] == "billing.invoice.payment_failed"
        )  # fmt: skip
        parts = dict(p.split("=", 1) for p in headers_seen["X-Tollgate-Signature"].split(","))
        expected = hmac.new(notice_secret.encode(), f"{parts['t']}.".encode() + raw_notice,
                            hashlib.sha256).hexdigest()  # fmt: skip
        assert parts["v1"] == expected
        notice = json.loads(raw_notice)["data"]
        assert notice["keys_suspended"] == [key["id"]]
        assert (notice["customer_id"], notice["period"]) == (customer, PERIOD)

        # A replay changes nothing.
        replay = await http.post(hook, content=body, headers=headers)
        assert replay.json()["duplicate"] is True

        # The customer pays: localstripe signs and sends invoice.payment_succeeded itself.
        async with httpx.AsyncClient() as raw:
            paid = await raw.post(f"{stripe_fake.url}/v1/invoices/{invoice_id}/pay",
                                  headers={"Authorization": "Bearer sk_test_x"})  # fmt: skip
            assert paid.status_code == 200, paid.text

        async def restored() -> bool:
            return (await _chat(http, key["secret"])).status_code == 200

        await _eventually(restored)
        detail = (await http.get(f"/v1/billing/runs/{run['id']}", headers=tenant.headers)).json()
        assert detail["records"][0]["state"] == "paid"
        await _eventually(lambda: told("billing.invoice.paid"))

    async def test_bad_signatures_and_unknown_tenants(self, served, stripe_fake: LocalStripe):
        _, http = served
        tenant = await create_tenant(http)
        await configure_stripe(http, tenant)
        event = {"id": "evt_x", "object": "event", "type": "invoice.paid",
                 "data": {"object": {"id": "in_x", "object": "invoice"}}}  # fmt: skip
        hook = f"/v1/billing/stripe/webhook/{tenant.id}"
        body, headers = _signed(event, "whsec_wrongsecret")
        response = await http.post(hook, content=body, headers=headers)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_signature"
        stale = stripe.WebhookSignature.generate_signature_header(
            body.decode(), WEBHOOK_SECRET, int(time.time()) - 600
        )
        response = await http.post(hook, content=body, headers={"Stripe-Signature": stale})
        assert response.status_code == 400
        response = await http.post(hook, content=body)
        assert response.status_code == 400
        body, headers = _signed(event)
        for other in (
            "/v1/billing/stripe/webhook/not-a-uuid",
            "/v1/billing/stripe/webhook/00000000-0000-0000-0000-000000000000",
        ):
            assert (await http.post(other, content=body, headers=headers)).status_code == 404
        ok = await http.post(hook, content=body, headers=headers)
        assert ok.status_code == 200
        assert ok.json()["handled"] is False  # not an invoice Tollgate made
