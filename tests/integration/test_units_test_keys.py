"""Embeddings, audio and images with a `qlk_test_` key (SPEC §4, §5.12): well-formed free
answers from the built-in mock, metered with realistic units at no cost, never an upstream."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.factories.audio import tone_wav
from tests.factories.tenants import create_key, create_tenant
from tests.factories.usage import logs_when_seen


@pytest.fixture
async def test_key(client: httpx.AsyncClient) -> tuple[dict[str, str], dict[str, str]]:
    tenant = await create_tenant(client)
    key = await create_key(client, tenant, test=True)
    return {"Authorization": f"Bearer {key['secret']}"}, tenant.headers


async def _logs(client: httpx.AsyncClient, master: dict[str, str], count: int) -> list[dict]:
    return await logs_when_seen(client, master, count)


async def test_embeddings_single_batched_and_base64(client, test_key):
    headers, master = test_key
    one = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello"},
        headers=headers,
    )  # fmt: skip
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["object"] == "list"
    assert len(body["data"][0]["embedding"]) == 1536
    assert body["usage"]["prompt_tokens"] == 1
    batch = await client.post(
        "/v1/embeddings",
        json={"model": "gemini-embedding-001", "input": ["a b", "c d e"], "dimensions": 8,
              "encoding_format": "base64"},
        headers=headers,
    )  # fmt: skip
    assert batch.status_code == 200, batch.text
    vectors = [base64.b64decode(item["embedding"]) for item in batch.json()["data"]]
    assert [len(v) for v in vectors] == [32, 32]  # 8 float32s each
    again = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello"},
        headers=headers,
    )  # fmt: skip
    assert again.json()["data"] == body["data"]  # deterministic
    logs = await _logs(client, master, 3)
    assert {log["endpoint"] for log in logs} == {"/v1/embeddings"}
    assert all(log["cost_micros"] == 0 for log in logs)


async def test_transcription_translation_formats(client, test_key):
    headers, master = test_key
    audio = tone_wav(1.0)
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        response = await client.post(
            path, data={"model": "whisper-1"}, files={"file": ("tone.wav", audio, "audio/wav")},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.json()["text"].startswith("This is a mock transcription")
    srt = await client.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1", "response_format": "srt"},
        files={"file": ("tone.wav", audio, "audio/wav")}, headers=headers,
    )  # fmt: skip
    assert srt.status_code == 200, srt.text
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:01,000\nThis is a mock")
    vtt = await client.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1", "response_format": "vtt"},
        files={"file": ("tone.wav", audio, "audio/wav")}, headers=headers,
    )  # fmt: skip
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n")
    logs = await _logs(client, master, 4)
    assert all(log["audio_seconds"] == 1 and log["cost_micros"] == 0 for log in logs)


async def test_streamed_transcription_events(client, test_key):
    headers, _ = test_key
    async with client.stream(
        "POST", "/v1/audio/transcriptions",
        data={"model": "gpt-4o-mini-transcribe", "stream": "true"},
        files={"file": ("tone.wav", tone_wav(0.5), "audio/wav")}, headers=headers,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        text = (await response.aread()).decode()
    assert '"transcript.text.delta"' in text
    assert text.rstrip().endswith("}")
    assert '"transcript.text.done"' in text


async def test_speech_is_audio_and_images_are_images(client, test_key):
    headers, master = test_key
    speech = await client.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello there", "voice": "alloy",
              "response_format": "wav"},
        headers=headers,
    )  # fmt: skip
    assert speech.status_code == 200, speech.text
    assert speech.headers["content-type"] == "audio/wav"
    assert speech.content.startswith(b"RIFF")
    tokens = await client.post(
        "/v1/audio/speech",
        json={"model": "gpt-4o-mini-tts", "input": "Hello", "voice": "alloy",
              "response_format": "wav"},
        headers=headers,
    )  # fmt: skip
    assert tokens.status_code == 200
    assert tokens.content.startswith(b"RIFF")
    images = await client.post(
        "/v1/images/generations", json={"model": "dall-e-2", "prompt": "a cat", "n": 2},
        headers=headers,
    )  # fmt: skip
    assert images.status_code == 200, images.text
    data = images.json()["data"]
    assert len(data) == 2
    assert base64.b64decode(data[0]["b64_json"]).startswith(b"\x89PNG")
    logs = {log["endpoint"] + log["model"]: log for log in await _logs(client, master, 3)}
    assert logs["/v1/audio/speechtts-1"]["characters"] == len("Hello there")
    assert logs["/v1/images/generationsdall-e-2"]["images"] == 2
    assert all(log["cost_micros"] == 0 for log in logs.values())


async def test_a_model_of_another_kind_is_refused_on_each_endpoint(client, test_key):
    headers, _ = test_key
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": "whisper-1", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )  # fmt: skip
    assert chat.status_code == 400
    assert chat.json()["error"]["code"] == "invalid_model"
    assert "transcription model" in chat.json()["error"]["message"]
    embed = await client.post(
        "/v1/embeddings", json={"model": "gpt-4o", "input": "x"}, headers=headers
    )
    assert embed.status_code == 400
    assert embed.json()["error"]["param"] == "model"
