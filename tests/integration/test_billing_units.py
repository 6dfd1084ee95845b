"""Stripe invoicing of embeddings, audio and images (SPEC §5.12): the month-end sync bills a
key's whole spend, tokens and per-unit use alike, on that key's one invoice line."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api.billing.amounts import previous_period
from api.db import create_sessionmaker
from api.kit.time import utcnow
from api.settings import Settings
from api.usage.models import UsageEvent
from api.usage.rollups import insert_events
from tests.factories.audio import tone_wav
from tests.factories.billing import (
    configure_stripe,
    create_customer,
    expected_cents,
    invoices_of,
    month_moment,
)
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros, logs_when_seen
from tests.fakes.stripe import LocalStripe

PERIOD = previous_period(utcnow())
MARKUP_BPS = 10_000  # +100 %: the period's amount clears Stripe's 50 ¢ minimum

# List prices as OpenAI publishes them, in USD, written out here (not read from the catalog).
GPT_4O_MINI_USD_PER_MILLION = ("0.15", "0.075", "0.60")
EMBEDDING_3_SMALL_USD_PER_MILLION_TOKENS = Decimal("0.02")
WHISPER_USD_PER_MINUTE = Decimal("0.006")
TTS_1_USD_PER_MILLION_CHARACTERS = Decimal("15")
DALL_E_2_1024_USD_PER_IMAGE = Decimal("0.020")
DALL_E_3_HD_WIDE_USD_PER_IMAGE = Decimal("0.120")


def micros(usd: Decimal) -> int:
    return math.ceil(usd * 1_000_000)


@pytest.fixture
def gateway_settings(gateway_settings: Settings, stripe_fake: LocalStripe) -> Settings:
    """The gateway on the fake upstreams, billing through localstripe."""
    return gateway_settings.model_copy(
        update={"stripe_api_base": stripe_fake.url, "stripe_max_network_retries": 0}
    )


async def _ok(response: httpx.Response) -> httpx.Response:
    await response.aread()
    assert response.status_code == 200, response.text
    return response


async def _use_everything(http: httpx.AsyncClient, secret: str, seconds: int, words: str) -> None:
    """A chat request, an embedding, a whisper transcription, tts-1 speech and dall-e-2 images."""
    headers = bearer(secret)
    await _ok(await http.post(
        "/v1/chat/completions", headers=headers,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
    ))  # fmt: skip
    await _ok(await http.post(
        "/v1/embeddings", headers=headers,
        json={"model": "text-embedding-3-small", "input": "The quick brown fox"},
    ))  # fmt: skip
    await _units_only(http, secret, seconds, words)
    await _ok(await http.post(
        "/v1/images/generations", headers=headers,
        json={"model": "dall-e-2", "prompt": "a lighthouse", "n": 10, "size": "1024x1024"},
    ))  # fmt: skip


async def _units_only(http: httpx.AsyncClient, secret: str, seconds: int, words: str) -> None:
    headers = bearer(secret)
    await _ok(await http.post(
        "/v1/audio/transcriptions", headers=headers, data={"model": "whisper-1"},
        files={"file": ("tone.wav", tone_wav(seconds, 8_000), "audio/wav")},
    ))  # fmt: skip
    await _ok(await http.post(
        "/v1/audio/speech", headers=headers,
        json={"model": "tts-1", "input": words, "voice": "alloy"},
    ))  # fmt: skip


def _list_price_micros(event: dict[str, Any]) -> int:
    """What the event costs at list price, from its own usage."""
    match event["model"]:
        case "gpt-4o-mini":
            return expected_cost_micros(
                event["input_tokens"], event["cached_input_tokens"], event["output_tokens"],
                GPT_4O_MINI_USD_PER_MILLION,
            )  # fmt: skip
        case "text-embedding-3-small":
            return micros(event["input_tokens"] * EMBEDDING_3_SMALL_USD_PER_MILLION_TOKENS / 10**6)
        case "whisper-1":
            return micros(event["audio_seconds"] * WHISPER_USD_PER_MINUTE / 60)
        case "tts-1":
            return micros(event["characters"] * TTS_1_USD_PER_MILLION_CHARACTERS / 10**6)
        case "dall-e-2":
            return micros(event["images"] * DALL_E_2_1024_USD_PER_IMAGE)
        case "dall-e-3":
            return micros(event["images"] * DALL_E_3_HD_WIDE_USD_PER_IMAGE)
    raise AssertionError(f"unexpected model {event['model']}")


async def _move_to_period(engine: AsyncEngine, tenant_id: str, period: str) -> list[dict[str, Any]]:
    """The gateway's events, recorded again (new ids, through the ledger's own insert, which
    keeps the rollups) inside the past month the sync bills; returns the copies."""
    columns = [column.name for column in UsageEvent.__table__.columns]
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        rows = (await session.execute(
            select(UsageEvent).where(UsageEvent.tenant_id == uuid.UUID(tenant_id))
        )).scalars().all()  # fmt: skip
    at = month_moment(period)
    copies = [
        {**{name: getattr(row, name) for name in columns},
         "id": uuid.uuid4(), "request_id": f"req_{uuid.uuid4().hex}", "created_at": at}
        for row in rows
    ]  # fmt: skip
    async with sessionmaker() as session, session.begin():
        assert await insert_events(session, copies) == len(copies)
    return copies


async def test_one_line_per_key_whose_amount_includes_every_kind_of_use(
    http: httpx.AsyncClient, engine: AsyncEngine, stripe_fake: LocalStripe
) -> None:
    tenant = await create_tenant(http)
    await configure_stripe(http, tenant, markup_bps=MARKUP_BPS)
    customer = await create_customer(stripe_fake.url)
    mixed = await create_key(http, tenant, name="mixed", stripe_customer_id=customer)
    media = await create_key(http, tenant, name="media", stripe_customer_id=customer)

    words = "Tollgate bills every second, character and image it relays. " * 3
    await _use_everything(http, mixed["secret"], 30, words)
    await _units_only(http, media["secret"], 45, words[:100])
    await _ok(await http.post(
        "/v1/images/generations", headers=bearer(media["secret"]),
        json={"model": "dall-e-3", "prompt": "a harbour", "quality": "hd", "size": "1792x1024"},
    ))  # fmt: skip
    await logs_when_seen(http, tenant.headers, 8)

    events = await _move_to_period(engine, tenant.id, PERIOD)
    assert len(events) == 8
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        assert event["status"] == 200
        by_key[str(event["key_id"])].append(event)
        # Each event's cost is its list price, per-unit use included.
        assert event["cost_micros"] == _list_price_micros(event) > 0
    assert sorted(e["model"] for e in by_key[mixed["id"]]) == [
        "dall-e-2", "gpt-4o-mini", "text-embedding-3-small", "tts-1", "whisper-1",
    ]  # fmt: skip
    assert sorted(e["model"] for e in by_key[media["id"]]) == ["dall-e-3", "tts-1", "whisper-1"]
    units = {
        (str(e["key_id"]), e["model"]): (e["audio_seconds"], e["characters"], e["images"])
        for e in events
        if e["model"] in ("whisper-1", "tts-1", "dall-e-2", "dall-e-3")
    }
    assert units == {
        (mixed["id"], "whisper-1"): (30, 0, 0),
        (mixed["id"], "tts-1"): (0, len(words), 0),
        (mixed["id"], "dall-e-2"): (0, 0, 10),
        (media["id"], "whisper-1"): (45, 0, 0),
        (media["id"], "tts-1"): (0, 100, 0),
        (media["id"], "dall-e-3"): (0, 0, 1),
    }
    spend = {key_id: sum(e["cost_micros"] for e in rows) for key_id, rows in by_key.items()}
    # Tokens alone would bill next to nothing: per-unit use is most of each key's spend.
    for key_id, rows in by_key.items():
        tokens_only = sum(e["cost_micros"] for e in rows if e["model"].startswith(("gpt", "text")))
        assert expected_cents(tokens_only, MARKUP_BPS) < expected_cents(spend[key_id], MARKUP_BPS)

    response = await http.post("/v1/billing/sync", json={"period": PERIOD}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    run = response.json()
    assert (run["status"], run["customers"], run["invoices"], run["failed"]) == (
        "complete", 1, 1, 0,
    )  # fmt: skip

    (invoice,) = await invoices_of(stripe_fake.url, customer)
    assert invoice.status == "open"
    assert invoice.metadata["tollgate_period"] == PERIOD
    line_keys = [line.metadata["tollgate_key_id"] for line in invoice.lines.data]
    assert sorted(line_keys) == sorted([mixed["id"], media["id"]])  # one line per key
    for line in invoice.lines.data:
        assert line.amount == expected_cents(spend[line.metadata["tollgate_key_id"]], MARKUP_BPS)
    assert invoice.amount_due == sum(line.amount for line in invoice.lines.data)

    detail = (await http.get(f"/v1/billing/runs/{run['id']}", headers=tenant.headers)).json()
    (record,) = detail["records"]
    assert {line["key_id"]: line["spend_micros"] for line in record["lines"]} == spend
    assert record["amount_cents"] == invoice.amount_due
