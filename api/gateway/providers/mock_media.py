"""The mock provider's answers beyond chat (SPEC §5.12), for `qlk_test_` keys: embeddings,
transcriptions, speech and images in OpenAI's shapes, deterministic from the request, with
usage a real provider would report (and, like every mock answer, free).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from api.gateway.providers.base import UpstreamRequest
from api.gateway.sse import SSEEvent
from api.gateway.tokens import count_embedding_input, count_text
from api.kit.audio import duration_seconds

# A 1-by-1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
_DIMENSIONS = {"text-embedding-3-large": 3072, "gemini-embedding-001": 3072}
_SAMPLE_RATE = 8_000  # the mock's speech: silence, 8 kHz, 16-bit mono
_SECONDS_PER_CHARACTER = 0.06


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(parts)).digest()


def _vector(seed: bytes, dimensions: int) -> list[float]:
    """A unit vector, the same for the same input."""
    values: list[float] = []
    block = seed
    while len(values) < dimensions:
        block = hashlib.sha256(block).digest()
        values += [(byte - 127.5) / 127.5 for byte in block]
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    if items and all(isinstance(item, int) for item in items):
        items = [items]
    model = str(body.get("model", "mock"))
    dimensions = body.get("dimensions") or _DIMENSIONS.get(model, 1536)
    texts = [item for item in items if isinstance(item, str)]
    tokens = count_embedding_input(texts) + sum(len(i) for i in items if isinstance(i, list))
    data = []
    for index, item in enumerate(items):
        vector: Any = _vector(_digest(model, item), int(dimensions))
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def transcription(request: UpstreamRequest) -> tuple[dict[str, Any], str]:
    """The answer (its JSON) and its text."""
    body = request.body
    data = request.files[0].data if request.files else b""
    seconds = duration_seconds(data) or 1.0
    digest = hashlib.sha256(data).hexdigest()[:8]
    text = f"This is a mock transcription from Tollgate ({digest})."
    model = str(body.get("model", ""))
    if model.startswith("whisper"):
        usage: dict[str, Any] = {"type": "duration", "seconds": math.ceil(seconds)}
    else:
        heard = math.ceil(seconds * 10)
        prompt = count_text(str(body.get("prompt", "")))
        output = count_text(text)
        usage = {
            "type": "tokens",
            "input_tokens": heard + prompt,
            "input_token_details": {"text_tokens": prompt, "audio_tokens": heard},
            "output_tokens": output,
            "total_tokens": heard + prompt + output,
        }
    if body.get("response_format") == "verbose_json":
        answer = {
            "task": "translate" if request.path.endswith("translations") else "transcribe",
            "language": "english",
            "duration": round(seconds, 2),
            "text": text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 2),
                          "text": text, "tokens": [], "temperature": 0.0}],
            "usage": usage,
        }  # fmt: skip
        return answer, text
    return {"text": text, "usage": usage}, text


def transcription_events(request: UpstreamRequest) -> list[bytes]:
    answer, text = transcription(request)
    words = text.split(" ")
    deltas = [
        orjson.dumps({"type": "transcript.text.delta", "delta": w if i == 0 else " " + w})
        for i, w in enumerate(words)
    ]
    done = {"type": "transcript.text.done", "text": text, "usage": answer["usage"]}
    return [*deltas, orjson.dumps(done)]


def speech_audio(body: dict[str, Any]) -> bytes:
    """Silence as long as the text would take to say: a WAV file (other formats get the same
    bytes; a test key's audio is for checking the plumbing, not for listening)."""
    text = str(body.get("input", ""))
    frames = int(len(text) * _SECONDS_PER_CHARACTER * _SAMPLE_RATE)
    pcm = b"\x00\x00" * frames
    if body.get("response_format") == "pcm":
        return pcm
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, _SAMPLE_RATE, _SAMPLE_RATE * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


def speech_events(body: dict[str, Any]) -> list[bytes]:
    audio = speech_audio(body)
    size = 16_384
    events = [
        orjson.dumps({"type": "speech.audio.delta",
                      "audio": base64.b64encode(audio[i : i + size]).decode()})
        for i in range(0, len(audio), size)
    ]  # fmt: skip
    read = count_text(str(body.get("input", ""))) + count_text(str(body.get("instructions", "")))
    spoken = math.ceil(len(audio) / (_SAMPLE_RATE * 2) * 20)
    usage = {"input_tokens": read, "output_tokens": spoken, "total_tokens": read + spoken}
    return [*events, orjson.dumps({"type": "speech.audio.done", "usage": usage})]


def images(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n", 1)
    n = int(n) if isinstance(n, int | str) and str(n).isdigit() else 1
    encoded = base64.b64encode(PNG).decode()
    url = body.get("response_format") == "url"
    item = {"url": f"data:image/png;base64,{encoded}"} if url else {"b64_json": encoded}
    answer: dict[str, Any] = {"created": int(time.time()), "data": [dict(item) for _ in range(n)]}
    if str(body.get("model", "")).startswith("gpt-image"):
        read = count_text(str(body.get("prompt", "")))
        answer["usage"] = {
            "input_tokens": read, "output_tokens": 272 * n, "total_tokens": read + 272 * n,
            "input_tokens_details": {"text_tokens": read, "image_tokens": 0},
        }  # fmt: skip
    return answer


class MockBytes:
    """Audio bytes in pieces, as a provider sends them."""

    content_type = "audio/wav"

    def __init__(self, data: bytes, piece: int = 8_192) -> None:
        self._pieces = [data[i : i + piece] for i in range(0, len(data), piece)]

    async def chunks(self) -> AsyncIterator[bytes]:
        while self._pieces:
            yield self._pieces.pop(0)

    def release(self) -> None:
        self._pieces = []

    def close(self) -> None:
        self._pieces = []


class MockEvents:
    """OpenAI's audio event streams (no `[DONE]` after them)."""

    def __init__(self, events: list[bytes]) -> None:
        self._events = list(events)

    async def events(self) -> AsyncIterator[SSEEvent]:
        while self._events:
            yield SSEEvent(self._events.pop(0))

    def rest(self) -> AsyncIterator[SSEEvent]:
        return self.events()

    def release(self) -> None:
        self._events = []

    def close(self) -> None:
        self._events = []
