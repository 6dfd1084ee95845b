"""The official `openai` SDK's `embeddings`, `audio` and `images` resources against a running
Tollgate and the fake upstreams (SPEC §5.12): metered usage equals what the fake reported, the
cost equals the list prices written out here independently, and caps hold per unit before any
upstream call."""

from __future__ import annotations

import math
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.factories.audio import tone_wav
from tests.factories.tenants import TenantFixture, create_key, create_tenant
from tests.fakes import media
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.upstream import FakeUpstream

# List prices as the providers publish them, in USD (pricing.md), not the catalog's figures.
USD_PER_MILLION_TOKENS = {"text-embedding-3-small": "0.02", "gemini-embedding-001": "0.15"}
WHISPER_USD_PER_MINUTE = Decimal("0.006")
TTS_1_USD_PER_MILLION_CHARACTERS = Decimal("15")
DALL_E_2_USD_PER_1024_IMAGE = Decimal("0.020")


def micros(usd: Decimal) -> int:
    return math.ceil(usd * 1_000_000)


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)


def _logs(url: str, tenant: TenantFixture, count: int) -> list[dict[str, Any]]:
    """The request log, newest first, once it has `count` entries."""
    data: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, headers=tenant.headers) as http:
        for _ in range(200):
            data = http.get("/v1/logs").json()["data"]
            if len(data) >= count:
                return data
            time.sleep(0.05)
    raise AssertionError(f"the log never reached {count} entries: {data}")


@pytest.fixture
async def keys(http: httpx.AsyncClient) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    made = {
        "live": await create_key(http, tenant, name="live"),
        "seconds": await create_key(
            http, tenant, name="ten seconds",
            limits=[{"metric": "audio_seconds", "period": "month", "max": 10}],
        ),
        "images": await create_key(
            http, tenant, name="three images",
            limits=[{"metric": "images", "period": "month", "max": 3}],
        ),
        "no images": await create_key(
            http, tenant, name="chat only", allowed_models=["gpt-4o", "whisper-1"]
        ),
    }  # fmt: skip
    return tenant, {name: key["secret"] for name, key in made.items()}


class TestOfficialSDK:
    def test_embeddings_single_and_batched(self, gateway_url, keys, upstream: FakeUpstream):
        tenant, secrets = keys
        texts = ["The quick brown fox", "jumps over the lazy dog", "naïve café"]
        with _client(gateway_url, secrets["live"]) as client:
            one = client.embeddings.create(model="text-embedding-3-small", input=texts[0])
            many = client.embeddings.create(
                model="text-embedding-3-small", input=texts, dimensions=64
            )
        expected = media.embedding_vector("text-embedding-3-small", texts[0], 1536)
        assert one.data[0].embedding == pytest.approx(expected, abs=1e-6)
        assert [len(item.embedding) for item in many.data] == [64, 64, 64]
        reported = [seen.usage["prompt_tokens"] for seen in upstream.media]
        assert reported == [
            media.cl100k_tokens(texts[0]),
            sum(media.cl100k_tokens(text) for text in texts),
        ]
        logs = _logs(gateway_url, tenant, 2)
        assert sorted(log["input_tokens"] for log in logs) == sorted(reported)
        price = Decimal(USD_PER_MILLION_TOKENS["text-embedding-3-small"])
        for log in logs:
            assert log["cost_micros"] == micros(log["input_tokens"] * price / 1_000_000)

    def test_transcription_of_a_real_wav(self, gateway_url, keys, upstream: FakeUpstream):
        tenant, secrets = keys
        with _client(gateway_url, secrets["live"]) as client:
            result = client.audio.transcriptions.create(
                model="whisper-1", file=("tone.wav", tone_wav(1.0), "audio/wav")
            )
            srt = client.audio.transcriptions.create(
                model="whisper-1", file=("tone.wav", tone_wav(1.0), "audio/wav"),
                response_format="srt",
            )  # fmt: skip
        assert result.text == media.transcript_text(1.0)
        assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\n")
        assert upstream.media[0].files[0].data == tone_wav(1.0)  # forwarded as sent
        assert upstream.media[0].usage == {"type": "duration", "seconds": 1}
        for log in _logs(gateway_url, tenant, 2):
            assert log["audio_seconds"] == 1
            assert log["cost_micros"] == micros(WHISPER_USD_PER_MINUTE / 60)

    def test_speech_streamed_to_a_file(self, gateway_url, keys, upstream, tmp_path: Path):
        tenant, secrets = keys
        upstream.speech_chunk_delay = 0.01
        words = "Tollgate relays speech as it arrives, chunk by chunk."
        target = tmp_path / "speech.mp3"
        with (
            _client(gateway_url, secrets["live"]) as client,
            client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input=words
            ) as response,
        ):
            response.stream_to_file(target)
        assert target.read_bytes() == media.speech_audio("mp3", words)
        assert upstream.media_streams[0].completed
        (log,) = _logs(gateway_url, tenant, 1)
        assert log["characters"] == len(words)
        assert log["cost_micros"] == micros(
            len(words) * TTS_1_USD_PER_MILLION_CHARACTERS / 1_000_000
        )

    def test_images_generate_n_2(self, gateway_url, keys, upstream: FakeUpstream):
        tenant, secrets = keys
        with _client(gateway_url, secrets["live"]) as client:
            result = client.images.generate(
                model="dall-e-2", prompt="a lighthouse", n=2, size="1024x1024"
            )
        assert len(result.data) == 2
        assert all(item.url for item in result.data)
        assert upstream.media[0].images == 2
        (log,) = _logs(gateway_url, tenant, 1)
        assert log["images"] == 2
        assert log["cost_micros"] == micros(2 * DALL_E_2_USD_PER_1024_IMAGE)

    def test_image_edit_with_gpt_image_1(self, gateway_url, keys, upstream: FakeUpstream):
        tenant, secrets = keys
        with _client(gateway_url, secrets["live"]) as client:
            result = client.images.edit(
                model="gpt-image-1", image=("cat.png", media.TINY_PNG, "image/png"),
                prompt="give the cat a hat",
            )  # fmt: skip
        assert result.data[0].b64_json
        seen = upstream.media[0]
        assert [part.field for part in seen.files] == ["image"]
        assert seen.files[0].data == media.TINY_PNG
        usage = seen.usage
        shown = usage["input_tokens_details"]["image_tokens"]
        read = usage["input_tokens"] - shown
        (log,) = _logs(gateway_url, tenant, 1)
        assert log["images"] == 1
        # "auto" came back as medium 1024x1024: $0.042, plus text at $5 and images at $10 per 1M.
        assert log["cost_micros"] == micros(
            Decimal("0.042") + (read * Decimal(5) + shown * Decimal(10)) / 1_000_000
        )

    def test_caps_hold_per_unit_before_any_upstream_call(self, gateway_url, keys, upstream):
        _tenant, secrets = keys
        with _client(gateway_url, secrets["seconds"]) as client:
            with pytest.raises(openai.APIStatusError) as refused:
                client.audio.transcriptions.create(
                    model="whisper-1", file=("long.wav", tone_wav(30.0, rate=8_000), "audio/wav")
                )
            assert refused.value.status_code == 402
            assert "audio-seconds" in refused.value.message
            within = client.audio.transcriptions.create(
                model="whisper-1", file=("short.wav", tone_wav(10.0, rate=8_000), "audio/wav")
            )
            assert within.text
        with _client(gateway_url, secrets["images"]) as client:
            with pytest.raises(openai.APIStatusError) as four:
                client.images.generate(model="dall-e-2", prompt="cats", n=4)
            assert four.value.status_code == 402
            three = client.images.generate(model="dall-e-2", prompt="cats", n=3)
            assert len(three.data) == 3
            with pytest.raises(openai.APIStatusError) as more:
                client.images.generate(model="dall-e-2", prompt="cats", n=1)
            assert more.value.status_code == 402
        # Only the two that fit reached the upstream.
        assert [seen.path for seen in upstream.media] == [
            "/openai/v1/audio/transcriptions",
            "/openai/v1/images/generations",
        ]

    def test_allowed_models_block_an_image_model(self, gateway_url, keys, upstream):
        _, secrets = keys
        with (
            _client(gateway_url, secrets["no images"]) as client,
            pytest.raises(openai.APIStatusError) as blocked,
        ):
            client.images.generate(model="dall-e-3", prompt="a cat")
        assert blocked.value.status_code == 403
        assert blocked.value.body["code"] == "model_not_allowed"
        assert upstream.media == []


@pytest.fixture
async def gemini_keys(every_http: httpx.AsyncClient) -> tuple[TenantFixture, str]:
    tenant = await create_tenant(every_http)
    return tenant, (await create_key(every_http, tenant))["secret"]


def test_gemini_embeddings_through_the_openai_sdk(
    every_provider_url: str, gemini_keys, gemini: FakeGemini
):
    tenant, secret = gemini_keys
    texts = ["first document", "the second, longer document"]
    with _client(every_provider_url, secret) as client:
        one = client.embeddings.create(model="gemini-embedding-001", input=texts[0])
        many = client.embeddings.create(model="gemini-embedding-001", input=texts, dimensions=16)
    assert len(one.data[0].embedding) == 3072
    assert one.data[0].embedding == pytest.approx(
        media.embedding_vector("gemini-embedding-001", texts[0], 3072), abs=1e-6
    )
    assert [len(item.embedding) for item in many.data] == [16, 16]
    reported = [usage["promptTokenCount"] for usage in gemini.embedded]
    logs = _logs(every_provider_url, tenant, 2)
    assert sorted(log["input_tokens"] for log in logs) == sorted(reported)
    price = Decimal(USD_PER_MILLION_TOKENS["gemini-embedding-001"])
    for log in logs:
        assert log["provider"] == "gemini"
        assert log["cost_micros"] == micros(log["input_tokens"] * price / 1_000_000)
