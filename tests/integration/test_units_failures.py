"""Embeddings, audio and images when things go wrong (SPEC §5.12, §7): upstream failures, cut-off
streams, hostile files, bad forms, unpriced sizes, accounts without the capability, and
upstreams that bill the most they can. Every case ends in one usage event; no hold outlives it.
"""

from __future__ import annotations

import asyncio
import math
import struct
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings, UpstreamAccount
from tests.factories.audio import tone_wav
from tests.factories.tenants import TenantFixture, create_key, create_tenant
from tests.factories.usage import logs_when_seen
from tests.fakes import media
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream


def micros(usd: Decimal) -> int:
    return math.ceil(usd * 1_000_000)


def lying_wav(claimed: float, actual: float, rate: int = 8_000) -> bytes:
    """A WAV whose header says `claimed` seconds of audio, followed by `actual` seconds."""
    real = tone_wav(actual, rate)
    frames = int(claimed * rate)
    header = bytearray(real[:44])
    struct.pack_into("<I", header, 40, frames * 2)  # the data chunk's size
    struct.pack_into("<I", header, 4, 36 + frames * 2)
    return bytes(header) + real[44:]


async def _tenant_and_key(http: httpx.AsyncClient, **fields: Any) -> tuple[TenantFixture, str]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return tenant, key["secret"]


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _transcribe(
    http: httpx.AsyncClient, secret: str, audio: bytes, name: str = "a.wav", **fields: str
) -> httpx.Response:
    return await http.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1", **fields},
        files={"file": (name, audio, "audio/wav")}, headers=_auth(secret),
    )  # fmt: skip


class TestUpstreamFailures:
    async def test_a_failed_embedding_costs_nothing_and_frees_its_hold(self, http, upstream):
        # One micro-USD: room for exactly one such embedding, so a hold left behind would show.
        tenant, secret = await _tenant_and_key(http, max_spend_usd=0.000001)
        upstream.media_mode = "error500"
        failed = await http.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"},
            headers=_auth(secret),
        )  # fmt: skip
        assert failed.status_code == 502
        assert failed.headers["x-should-retry"] == "true"
        upstream.media_mode = "ok"
        fine = await http.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"},
            headers=_auth(secret),
        )  # fmt: skip
        assert fine.status_code == 200, fine.text
        logs = await logs_when_seen(http, tenant.headers, 2)
        assert sorted(log["status"] for log in logs) == [200, 502]
        assert [log["cost_micros"] for log in logs if log["status"] == 502] == [0]

    async def test_a_speech_stream_its_client_leaves_is_billed_whole(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        upstream.speech_chunk_delay = 0.2
        words = "A sentence long enough to come back in several pieces of audio. " * 4
        async with http.stream(
            "POST", "/v1/audio/speech", headers=_auth(secret),
            json={"model": "tts-1-hd", "input": words, "voice": "alloy", "response_format": "wav"},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            assert response.headers["content-type"] == "audio/wav"
            first = await anext(response.aiter_raw())
            assert first.startswith(b"RIFF")
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert log["status"] == 499
        assert log["characters"] == len(words)
        assert log["cost_micros"] == len(words) * 30  # tts-1-hd: $30 per million characters
        for _ in range(100):
            if upstream.media_streams and upstream.media_streams[0].disconnected:
                break
            await asyncio.sleep(0.05)
        assert upstream.media_streams[0].disconnected  # the upstream stopped generating too

    async def test_gpt_4o_mini_tts_audio_is_metered_from_its_events(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        words = "Per token speech."
        answer = await http.post(
            "/v1/audio/speech", headers=_auth(secret),
            json={"model": "gpt-4o-mini-tts", "input": words, "voice": "alloy",
                  "response_format": "wav", "instructions": "Calm."},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.content == media.speech_audio("wav", words)  # decoded from the events
        assert upstream.media[0].body["stream_format"] == "sse"
        usage = upstream.media[0].usage
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert (log["input_tokens"], log["output_tokens"]) == (
            usage["input_tokens"], usage["output_tokens"],
        )  # fmt: skip
        assert log["cost_micros"] == micros(
            (usage["input_tokens"] * Decimal("0.60") + usage["output_tokens"] * Decimal(12))
            / 1_000_000
        )

    async def test_streamed_gpt_4o_transcription_is_relayed_and_metered(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        async with http.stream(
            "POST", "/v1/audio/transcriptions", headers=_auth(secret),
            data={"model": "gpt-4o-transcribe", "stream": "true", "prompt": "Names: Ada"},
            files={"file": ("a.wav", tone_wav(2.0), "audio/wav")},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            body = (await response.aread()).decode()
        assert body.count("transcript.text.delta") >= 1
        assert "transcript.text.done" in body
        usage = upstream.media[0].usage
        heard = usage["input_token_details"]["audio_tokens"]
        read = usage["input_token_details"]["text_tokens"]
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert log["input_tokens"] == heard + read
        assert log["output_tokens"] == usage["output_tokens"]
        assert log["cost_micros"] == micros(
            (read * Decimal("2.50") + heard * Decimal(6) + usage["output_tokens"] * Decimal(10))
            / 1_000_000
        )

    async def test_a_transcription_stream_cut_off_is_billed_its_worst_case(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        upstream.media_mode = "drop"
        async with http.stream(
            "POST", "/v1/audio/transcriptions", headers=_auth(secret),
            data={"model": "gpt-4o-mini-transcribe", "stream": "true"},
            files={"file": ("a.wav", tone_wav(3.0), "audio/wav")},
        ) as response:  # fmt: skip
            body = (await response.aread()).decode()
        assert '"error"' in body
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert log["status"] >= 500
        # The context window of audio at the audio price, and every output token it may make.
        worst = micros((16_000 * Decimal(3) + 2_000 * Decimal(5)) / 1_000_000)
        assert log["cost_micros"] == worst

    async def test_an_upstream_that_bills_more_seconds_is_billed_as_reported(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        upstream.reported_seconds_override = 7
        answer = await _transcribe(http, secret, tone_wav(1.0))
        assert answer.status_code == 200
        assert answer.json()["usage"] == {"type": "duration", "seconds": 7}
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert (log["audio_seconds"], log["cost_micros"]) == (7, 700)

    async def test_more_images_than_asked_are_billed_as_made(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        upstream.images_extra = 1
        answer = await http.post(
            "/v1/images/generations", headers=_auth(secret),
            json={"model": "dall-e-2", "prompt": "x", "n": 2, "size": "256x256"},
        )  # fmt: skip
        assert len(answer.json()["data"]) == 3
        (log,) = await logs_when_seen(http, tenant.headers, 1)
        assert (log["images"], log["cost_micros"]) == (3, 3 * 16_000)


class TestConcurrentCaps:
    async def test_twenty_at_once_never_pass_an_images_limit(self, http, upstream):
        tenant, secret = await _tenant_and_key(
            http, limits=[{"metric": "images", "period": "month", "max": 5}]
        )
        answers = await asyncio.gather(*(
            http.post(
                "/v1/images/generations", headers=_auth(secret),
                json={"model": "dall-e-2", "prompt": f"cat {i}", "size": "256x256"},
            )
            for i in range(20)
        ))  # fmt: skip
        assert sorted(a.status_code for a in answers) == [200] * 5 + [402] * 15
        assert sum(seen.images for seen in upstream.media) == 5
        logs = await logs_when_seen(http, tenant.headers, 20)
        assert sum(log["images"] for log in logs) == 5
        listed = (await http.get("/v1/keys", headers=tenant.headers)).json()["data"]
        (key,) = [item for item in listed if item["scope"] == "standard"]
        shown = (await http.get(f"/v1/keys/{key['id']}", headers=tenant.headers)).json()
        assert shown["limits"] == [
            {"metric": "images", "period": "month", "max": 5, "used": 5, "remaining": 0}
        ]

    async def test_twenty_at_once_never_pass_a_spend_cap_on_transcriptions(self, http, upstream):
        # 3 seconds of whisper cost 300 micro-USD: a 1,000 micro-USD cap holds three of them.
        tenant, secret = await _tenant_and_key(http, max_spend_usd=0.001)
        audio = tone_wav(3.0, rate=8_000)
        answers = await asyncio.gather(*(_transcribe(http, secret, audio) for _ in range(20)))
        assert sorted(a.status_code for a in answers) == [200] * 3 + [402] * 17
        logs = await logs_when_seen(http, tenant.headers, 20)
        assert sum(log["cost_micros"] for log in logs) == 900
        assert sum(log["audio_seconds"] for log in logs) == 9


class TestHostileFiles:
    async def test_a_header_that_understates_the_length_does_not_shrink_the_hold(
        self, http, upstream
    ):
        _, secret = await _tenant_and_key(
            http, limits=[{"metric": "audio_seconds", "period": "month", "max": 10}]
        )
        refused = await _transcribe(http, secret, lying_wav(claimed=1.0, actual=30.0))
        assert refused.status_code == 402
        assert upstream.media == []

    async def test_an_unreadable_file_is_held_at_the_upload_limits_worst(self, http, upstream):
        tenant, capped = await _tenant_and_key(http, max_spend_usd=1)
        noise = bytes(range(256)) * 40
        refused = await _transcribe(http, capped, noise, name="a.webm")
        assert refused.status_code == 402  # 25 MiB at 6 kbit/s is $3.50 of whisper
        assert upstream.media == []
        _, free = await _tenant_and_key(http)
        answer = await _transcribe(http, free, noise, name="a.webm")
        assert answer.status_code == 200, answer.text
        log = (await logs_when_seen(http, _auth(free), 1))[0]
        assert log["audio_seconds"] == 1  # what the provider billed, not what was held
        assert tenant  # the capped key's tenant saw a refusal only

    async def test_an_upload_over_the_limit_is_413(self, gateway_settings: Settings, upstream):
        settings = gateway_settings.model_copy(update={"audio_max_bytes": 4096})
        with serve_in_thread(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                _, secret = await _tenant_and_key(http)
                answer = await _transcribe(http, secret, tone_wav(1.0))
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
        assert upstream.media == []


class TestBadRequests:
    async def test_forms_and_fields_are_checked_before_any_call(self, http, upstream):
        tenant, secret = await _tenant_and_key(http)
        headers = _auth(secret)
        no_file = await http.post(
            "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": ("x", b"1")},
            headers=headers,
        )  # fmt: skip
        assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")
        as_json = await http.post(
            "/v1/audio/transcriptions", json={"model": "whisper-1"}, headers=headers
        )
        assert as_json.status_code == 400
        assert "multipart/form-data" in as_json.json()["error"]["message"]
        whisper_stream = await _transcribe(http, secret, tone_wav(1.0), stream="true")
        assert whisper_stream.json()["error"]["param"] == "stream"
        bad_format = await _transcribe(http, secret, tone_wav(1.0), response_format="xml")
        assert bad_format.json()["error"]["param"] == "response_format"
        size = await http.post(
            "/v1/images/generations", headers=headers,
            json={"model": "dall-e-3", "prompt": "x", "size": "256x256"},
        )  # fmt: skip
        assert (size.status_code, size.json()["error"]["param"]) == (400, "size")
        assert "1024x1792" in size.json()["error"]["message"]
        too_many = await http.post(
            "/v1/images/generations", headers=headers,
            json={"model": "dall-e-2", "prompt": "x", "n": 11},
        )  # fmt: skip
        assert too_many.json()["error"]["param"] == "n"
        mixed = await http.post(
            "/v1/embeddings", headers=headers,
            json={"model": "text-embedding-3-small", "input": [[1, 2], "text"]},
        )  # fmt: skip
        assert (mixed.status_code, mixed.json()["error"]["param"]) == (400, "input")
        for bad_n in ("²", "9" * 5000):
            odd = await http.post(
                "/v1/images/generations", headers=headers,
                json={"model": "dall-e-2", "prompt": "x", "n": bad_n},
            )  # fmt: skip
            assert (odd.status_code, odd.json()["error"]["param"]) == (400, "n")
        listed = await http.post(
            "/v1/audio/speech", headers=headers,
            json={"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": []},
        )  # fmt: skip
        assert (listed.status_code, listed.json()["error"]["param"]) == (400, "response_format")
        wide = await http.post(
            "/v1/embeddings", headers=headers,
            json={"model": "text-embedding-3-small", "input": "x", "dimensions": 200_000},
        )  # fmt: skip
        assert (wide.status_code, wide.json()["error"]["param"]) == (400, "dimensions")
        huge = await http.post(
            "/v1/embeddings", headers=headers,
            json={"model": "text-embedding-3-small", "input": ["x" * 1_300_000] * 2},
        )  # fmt: skip
        assert (huge.status_code, huge.json()["error"]["param"]) == (400, "input")
        long_speech = await http.post(
            "/v1/audio/speech", headers=headers,
            json={"model": "tts-1", "input": "x" * 4097, "voice": "alloy"},
        )  # fmt: skip
        assert long_speech.json()["error"]["param"] == "input"
        assert upstream.media == []
        logs = await logs_when_seen(http, tenant.headers, 13)
        assert [log["status"] for log in logs] == [400] * 13  # refusals are logged, free
        assert all(log["cost_micros"] == 0 for log in logs)

    async def test_unknown_fields_are_dropped_and_named(self, http, upstream):
        _, secret = await _tenant_and_key(http)
        answer = await http.post(
            "/v1/embeddings", headers=_auth(secret),
            json={"model": "text-embedding-3-small", "input": "x", "surprise": 1},
        )  # fmt: skip
        assert answer.status_code == 200
        assert "surprise" in answer.headers["x-tollgate-warning"]
        assert "surprise" not in upstream.media[0].body

    async def test_unknown_fields_refused_when_the_operator_says(
        self, gateway_settings: Settings, upstream
    ):
        settings = gateway_settings.model_copy(update={"unknown_fields": "refuse"})
        with serve_in_thread(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                _, secret = await _tenant_and_key(http)
                answer = await _transcribe(http, secret, tone_wav(1.0), surprise="1")
        assert (answer.status_code, answer.json()["error"]["param"]) == (400, "surprise")
        assert upstream.media == []


async def test_gemini_takes_text_not_token_arrays(every_http: httpx.AsyncClient):
    _, secret = await _tenant_and_key(every_http)
    refused = await every_http.post(
        "/v1/embeddings", headers=_auth(secret),
        json={"model": "gemini-embedding-001", "input": [[1, 2, 3]]},
    )  # fmt: skip
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "input")
    assert "Gemini" in refused.json()["error"]["message"]


class TestCapabilities:
    @pytest.fixture
    def images_only_url(self, gateway_settings: Settings, upstream: FakeUpstream):
        account = UpstreamAccount(
            api_key=SecretStr("sk-images"), name="images", base_url=upstream.openai_base_url,
            capabilities=["images"],
        )  # fmt: skip
        settings = gateway_settings.model_copy(
            update={"openai_api_key": None, "upstreams": {"openai": [account]}}
        )
        with serve_in_thread(create_app(settings)) as url:
            yield url

    async def test_only_accounts_that_declare_a_capability_serve_it(
        self, images_only_url, upstream
    ):
        async with httpx.AsyncClient(base_url=images_only_url) as http:
            _, secret = await _tenant_and_key(http)
            refused = await http.post(
                "/v1/embeddings", headers=_auth(secret),
                json={"model": "text-embedding-3-small", "input": "x"},
            )  # fmt: skip
            served = await http.post(
                "/v1/images/generations", headers=_auth(secret),
                json={"model": "dall-e-2", "prompt": "x"},
            )  # fmt: skip
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "provider_not_configured"
        assert "embeddings" in refused.json()["error"]["message"]
        assert served.status_code == 200, served.text
        assert [seen.path for seen in upstream.media] == ["/openai/v1/images/generations"]


async def test_the_catalog_lists_per_unit_prices(http, upstream):
    _, secret = await _tenant_and_key(http)
    models = {
        m["id"]: m for m in (await http.get("/v1/models", headers=_auth(secret))).json()["data"]
    }
    assert models["whisper-1"]["pricing"]["per_second"] == 100
    assert models["tts-1"]["pricing"]["per_character"] == 15
    assert models["text-embedding-3-small"]["pricing"]["input"] == 20_000
    prices = {
        (p["quality"], p["size"]): p["price"] for p in models["dall-e-3"]["pricing"]["per_image"]
    }
    assert prices[("hd", "1792x1024")] == 120_000
    assert models["gpt-4o-transcribe"]["pricing"]["media_input"] == 6_000_000
    assert models["dall-e-3"]["kind"] == "image"
    assert models["gpt-4o"]["kind"] == "chat"
