"""Helpers to read what the gateway metered, waiting for the recorder's background write."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx

from tests.factories.tenants import TenantFixture


def expected_cost_micros(
    prompt: int, cached: int, completion: int, usd_per_million: tuple[str, str, str]
) -> int:
    """SPEC §7 written out independently: USD per million tokens → micro-USD, rounded up."""
    price_in, price_cached, price_out = (Decimal(p) for p in usd_per_million)
    usd = ((prompt - cached) * price_in + cached * price_cached + completion * price_out) / 10**6
    return math.ceil(usd * 10**6)


async def usage_when_settled(
    http: httpx.AsyncClient, tenant: TenantFixture, requests: int, **params: Any
) -> dict[str, Any]:
    """`/v1/usage` once it counts `requests` requests (events are written in the background)."""
    body: dict[str, Any] = {}
    for _ in range(100):
        body = (await http.get("/v1/usage", params=params, headers=tenant.headers)).json()
        if body["totals"]["requests"] >= requests:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage never reached {requests} requests: {body}")


async def logs_when_settled(
    http: httpx.AsyncClient, tenant: TenantFixture, count: int
) -> list[dict[str, Any]]:
    return await logs_when_seen(http, tenant.headers, count)


async def logs_when_seen(
    http: httpx.AsyncClient, headers: dict[str, str], count: int
) -> list[dict[str, Any]]:
    """`/v1/logs` as the key (or master key) in `headers` sees it, once it has `count` entries."""
    data: list[dict[str, Any]] = []
    for _ in range(100):
        data = (await http.get("/v1/logs", headers=headers)).json()["data"]
        if len(data) >= count:
            return data
        await asyncio.sleep(0.05)
    raise AssertionError(f"the log never reached {count} entries: {data}")


async def start_of_a_minute() -> None:
    """Rate windows are calendar minutes: do not let one end in the middle of a test."""
    second = datetime.now(UTC).second
    if second >= 55:
        await asyncio.sleep(61 - second)
