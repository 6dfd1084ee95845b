"""The fake upstreams' embedding, audio and image endpoints answer in the providers' shapes (read
back with the official OpenAI SDK's types) and bill by the rules tests rely on."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import httpx
import pytest
from openai import BadRequestError, OpenAI

from tests.fakes.gemini_upstream import API_KEY, FakeGemini
from tests.fakes.media import (
    CL100K,
    EDIT_IMAGE_TOKENS,
    IMAGE_OUTPUT_TOKENS,
    TINY_PNG,
    decode_embedding_base64,
    embedding_vector,
    o200k_tokens,
    speech_audio,
    transcript_text,
    wav_bytes,
)
from tests.fakes.upstream import FakeUpstream


@pytest.fixture
def sdk(upstream: FakeUpstream) -> Iterator[OpenAI]:
    with OpenAI(api_key="sk-test", base_url=upstream.openai_base_url, max_retries=0) as client:
        yield client


def test_embeddings_are_deterministic_and_count_cl100k_tokens(
    upstream: FakeUpstream, sdk: OpenAI
) -> None:
    texts = ["hello world", "Tollgate meters <|endoftext|> every token"]
    answer = sdk.embeddings.create(model="text-embedding-3-small", input=texts)
    assert upstream.media[-1].body["encoding_format"] == "base64"  # the SDK's default
    expected = sum(len(CL100K.encode_ordinary(t)) for t in texts)
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == expected
    assert [len(e.embedding) for e in answer.data] == [1536, 1536]
    assert answer.data[1].embedding == embedding_vector("text-embedding-3-small", texts[1], 1536)

    ids = sdk.embeddings.create(
        model="text-embedding-3-large", input=[[1, 2, 3], [4]], dimensions=8,
        encoding_format="float",
    )  # fmt: skip
    assert [len(e.embedding) for e in ids.data] == [8, 8]
    assert ids.usage.prompt_tokens == 4

    upstream.embedding_tokens_override = 10**6
    body = {"model": "text-embedding-3-large", "input": "x", "encoding_format": "base64"}
    raw = httpx.post(f"{upstream.openai_base_url}/embeddings", json=body).json()
    assert raw["usage"] == {"prompt_tokens": 10**6, "total_tokens": 10**6}
    assert upstream.reported[-1] == raw["usage"]
    vector = decode_embedding_base64(raw["data"][0]["embedding"])
    assert vector == embedding_vector("text-embedding-3-large", "x", 3072)

    with pytest.raises(BadRequestError) as refused:
        sdk.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    assert refused.value.param == "dimensions"


def test_transcription_bills_the_wav_duration(upstream: FakeUpstream, sdk: OpenAI) -> None:
    audio = wav_bytes(2.3)
    verbose = sdk.audio.transcriptions.create(
        model="whisper-1", response_format="verbose_json", file=("a.wav", audio, "audio/wav")
    )
    assert verbose.duration == pytest.approx(2.3)
    assert verbose.text == transcript_text(2.3)
    assert verbose.usage is not None
    assert verbose.usage.seconds == 3  # ceil
    assert verbose.segments
    assert verbose.segments[0].end == pytest.approx(2.3)
    upload = upstream.media[-1].files[0]
    assert (upload.field, upload.filename, upload.data) == ("file", "a.wav", audio)
    assert upstream.media[-1].body["response_format"] == "verbose_json"
    assert upstream.media[-1].seconds == pytest.approx(2.3)

    prompt = "Names: Tollgate."
    tokens = sdk.audio.transcriptions.create(
        model="gpt-4o-transcribe", prompt=prompt, file=("a.mp3", b"ID3...", "audio/mpeg")
    )
    text = transcript_text(1.0)  # a format other than WAV lasts a second
    assert tokens.usage is not None
    assert tokens.usage.model_dump() == {
        "type": "tokens",
        "input_tokens": 10 + o200k_tokens(prompt),
        "input_token_details": {"audio_tokens": 10, "text_tokens": o200k_tokens(prompt)},
        "output_tokens": o200k_tokens(text),
        "total_tokens": 10 + o200k_tokens(prompt) + o200k_tokens(text),
    }

    srt = httpx.post(
        f"{upstream.openai_base_url}/audio/translations",
        data={"model": "whisper-1", "response_format": "srt"},
        files={"file": ("a.wav", audio, "audio/wav")},
    )
    assert srt.headers["content-type"].startswith("text/plain")
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:02,300\n")

    with pytest.raises(BadRequestError):
        sdk.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", response_format="srt", file=("a.wav", audio)
        )
    with pytest.raises(BadRequestError):
        sdk.audio.transcriptions.create(model="whisper-1", stream=True, file=("a.wav", audio))


def test_transcription_stream_ends_with_the_usage(upstream: FakeUpstream, sdk: OpenAI) -> None:
    stream = sdk.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", stream=True, file=("a.wav", wav_bytes(4.0))
    )
    events = list(stream)
    deltas, done = events[:-1], events[-1]
    assert {e.type for e in deltas} == {"transcript.text.delta"}
    assert done.type == "transcript.text.done"
    assert "".join(getattr(e, "delta", "") for e in deltas) == done.text == transcript_text(4.0)
    assert done.usage is not None
    assert done.usage.input_tokens == 40
    # The fake marks the stream complete once its last write returns, in its own thread: the
    # client can have read every event by then.
    for _ in range(200):
        if upstream.media_streams[-1].completed:
            break
        time.sleep(0.01)
    assert upstream.media_streams[-1].completed


def test_speech_streams_the_audio_in_chunks(upstream: FakeUpstream) -> None:
    url = f"{upstream.openai_base_url}/audio/speech"
    text = "Hello from the gateway, spoken slowly."
    wav = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
    answer = httpx.post(url, json=wav)
    assert answer.headers["content-type"] == "audio/wav"
    assert answer.content == speech_audio("wav", text)
    record = upstream.media_streams[-1]
    assert record.events_sent >= 3
    assert record.bytes_sent == record.total_bytes == len(answer.content)
    assert record.completed

    sse = {"model": "gpt-4o-mini-tts", "input": text, "voice": "coral", "stream_format": "sse"}
    lines = httpx.post(url, json=sse).text.splitlines()
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == o200k_tokens(text)
    assert events[-1]["usage"]["output_tokens"] == math.ceil(len(text) / 15 * 10)

    refused = httpx.post(url, json={**sse, "model": "tts-1"})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "stream_format"


def test_images_answer_n_items_and_bill_gpt_image_tokens(
    upstream: FakeUpstream, sdk: OpenAI
) -> None:
    dalle = sdk.images.generate(model="dall-e-2", prompt="a toll gate", n=2)
    assert dalle.data
    assert len(dalle.data) == 2
    assert dalle.data[0].url
    assert httpx.get(dalle.data[0].url).content == TINY_PNG
    with pytest.raises(BadRequestError):
        sdk.images.generate(model="dall-e-3", prompt="a toll gate", n=2)

    upstream.images_extra = 1
    gpt = sdk.images.generate(model="gpt-image-1", prompt="a toll gate", quality="high")
    assert gpt.data
    assert len(gpt.data) == 2
    assert gpt.usage is not None
    assert gpt.usage.output_tokens == 2 * IMAGE_OUTPUT_TOKENS["high"]["1024x1024"]
    assert gpt.usage.input_tokens_details.text_tokens == o200k_tokens("a toll gate")

    upstream.images_extra = 0
    images = [("a.png", TINY_PNG), ("b.png", TINY_PNG)]
    edit = sdk.images.edit(model="gpt-image-1", prompt="paint it", image=images)
    assert edit.usage is not None
    assert edit.usage.input_tokens_details.image_tokens == 2 * EDIT_IMAGE_TOKENS
    assert [f.field for f in upstream.media[-1].files] == ["image[]", "image[]"]


def test_media_mode_fails_the_media_endpoints(upstream: FakeUpstream) -> None:
    upstream.media_mode = "error500"
    body = {"model": "text-embedding-3-small", "input": "x"}
    answer = httpx.post(f"{upstream.openai_base_url}/embeddings", json=body)
    assert answer.status_code == 500
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert upstream.media[-1].status == 500


def test_gemini_embeddings(gemini: FakeGemini) -> None:
    base = f"{gemini.base_url}/v1beta/models/gemini-embedding-001"
    headers = {"x-goog-api-key": API_KEY}
    content = {"parts": [{"text": "three little words"}]}
    one = httpx.post(f"{base}:embedContent", headers=headers, json={"content": content}).json()
    vector = embedding_vector("gemini-embedding-001", "three little words", 3072)
    assert one["embedding"]["values"] == vector
    assert one["usageMetadata"]["promptTokenCount"] == 3

    requests = [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": text}]},
         "outputDimensionality": 256}
        for text in ("a b", "c")
    ]  # fmt: skip
    batch = httpx.post(f"{base}:batchEmbedContents", headers=headers, json={"requests": requests})
    assert [len(e["values"]) for e in batch.json()["embeddings"]] == [256, 256]
    assert gemini.embedded[-1]["promptTokenCount"] == 3

    gemini.embed_usage = False
    bare = httpx.post(f"{base}:embedContent", headers=headers, json={"content": content})
    assert set(bare.json()) == {"embedding"}
    chat_model = f"{gemini.base_url}/v1beta/models/gemini-2.5-flash:embedContent"
    assert httpx.post(chat_model, headers=headers, json={"content": content}).status_code == 404
