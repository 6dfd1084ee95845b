"""Billing test helpers: Stripe configuration, customers in the fake Stripe, ledger rows."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import stripe
from sqlalchemy.ext.asyncio import AsyncEngine

from api.billing.stripe_gateway import HTTPXClient
from api.db import create_sessionmaker
from api.usage.rollups import insert_events
from tests.factories.tenants import TenantFixture

SECRET_KEY = "sk_test_tollgatebilling0001"
WEBHOOK_SECRET = "whsec_tollgatebillingsecret"


async def configure_stripe(
    client: httpx.AsyncClient, tenant: TenantFixture, **fields: Any
) -> dict[str, Any]:
    body = {"secret_key": SECRET_KEY, "webhook_secret": WEBHOOK_SECRET, **fields}
    response = await client.put("/v1/billing/stripe", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@contextlib.asynccontextmanager
async def stripe_client(base_url: str) -> AsyncIterator[stripe.StripeClient]:
    http = HTTPXClient()
    try:
        yield stripe.StripeClient(
            SECRET_KEY, base_addresses={"api": base_url}, max_network_retries=0, http_client=http
        )
    finally:
        await http.close_async()


async def create_customer(base_url: str, card: str = "pm_card_visa") -> str:
    async with stripe_client(base_url) as client:
        customer = await client.v1.customers.create_async(
            {"email": "user@example.com", "payment_method": card,
             "invoice_settings": {"default_payment_method": card}}
        )  # fmt: skip
    return str(customer.id)


async def invoices_of(base_url: str, customer: str) -> list[Any]:
    async with stripe_client(base_url) as client:
        page = await client.v1.invoices.list_async({"customer": customer})
    return list(page.data)


async def add_spend(
    engine: AsyncEngine, tenant_id: str, key_id: str, micros: list[int], at: datetime
) -> None:
    """Ledger rows as the gateway writes them, one per request."""
    rows = [
        {
            "id": uuid.uuid4(),
            "request_id": f"req_{uuid.uuid4().hex}",
            "tenant_id": uuid.UUID(tenant_id),
            "key_id": uuid.UUID(key_id),
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "status": 200,
            "input_tokens": 10,
            "output_tokens": 10,
            "cost_micros": cost,
            "created_at": at,
        }
        for cost in micros
    ]
    async with create_sessionmaker(engine)() as session, session.begin():
        await insert_events(session, rows)


def month_moment(period: str, day: int = 15) -> datetime:
    year, month = (int(part) for part in period.split("-"))
    return datetime(year, month, day, 12, tzinfo=UTC)


def expected_cents(spend_micros: int, markup_bps: int) -> int:
    """The issue's formula written out independently, in exact decimals."""
    usd = Decimal(spend_micros) / 10**6 * (1 + Decimal(markup_bps) / 10_000)
    return math.ceil(usd * 100)
