"""`POST /v1/embeddings` in OpenAI's shape (SPEC §5.12), for OpenAI's embedding models and
Gemini's, translated to `batchEmbedContents`.

Priced per input token. The reservation counts the input exactly for OpenAI's models (their
cl100k vocabulary; a token array is its length) and bounds it for Gemini's (no token is shorter
than a byte: Google's tokenizer is not public). OpenAI bills what its `usage` reports; Gemini's
answer reports no usage, so its input is billed as counted with cl100k, marked estimated.

Only the fields OpenAI documents are forwarded: `model`, `input`, `dimensions`,
`encoding_format`, `user`. Gemini takes `dimensions` as `outputDimensionality`; a token array
has no meaning there and is refused.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from api.errors import InvalidRequest, UpstreamError
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import entry, translated
from api.gateway.dialects.openai import units
from api.gateway.pipeline import Call
from api.gateway.pricing import Price, Usage
from api.gateway.providers.base import UpstreamRequest
from api.gateway.relay import JSONBody
from api.gateway.tokens import count_embedding_input

EMBEDDINGS_PATH = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's limit per request
MAX_DIMENSIONS = 3072  # the largest vector any embedding model here makes
# OpenAI refuses more than 300,000 tokens per request; text this long is refused before it is
# counted (no token here is longer than 8 characters on average).
MAX_CHARACTERS = 8 * 300_000
_FORWARDED = ("model", "input", "dimensions", "encoding_format", "user")
# Counting runs off the event loop past this much text (it is CPU work in proportion).
_INLINE_CHARACTERS = 20_000


class Embedding:
    """A checked body: its inputs (strings, or token arrays) and what it asks of the vectors."""

    def __init__(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("model: a model name is required.", param="model")
        self.model = model
        self.body = {name: body[name] for name in _FORWARDED if name in body}
        self.unknown = {name: value for name, value in body.items() if name not in _FORWARDED}
        self.texts, self.token_arrays = _inputs(body.get("input"))
        dimensions = body.get("dimensions")
        if dimensions is not None and (
            not isinstance(dimensions, int)
            or isinstance(dimensions, bool)
            or not 1 <= dimensions <= MAX_DIMENSIONS
        ):
            raise InvalidRequest(
                f"dimensions: must be an integer from 1 to {MAX_DIMENSIONS}.", param="dimensions"
            )
        self.dimensions: int | None = dimensions
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise InvalidRequest(
                "encoding_format: must be 'float' or 'base64'.", param="encoding_format"
            )
        self.base64 = encoding == "base64"
        self.tokens = 0  # counted (OpenAI's vocabulary) before the call

    @property
    def count(self) -> int:
        return len(self.texts) + len(self.token_arrays)

    def byte_bound(self) -> int:
        return sum(len(text.encode()) for text in self.texts) + sum(map(len, self.token_arrays))


def _inputs(value: Any) -> tuple[list[str], list[list[int]]]:
    """`input` as OpenAI takes it: a string, strings, a token array, or token arrays."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "input: a string, a list of strings or a list of token arrays is required.",
            param="input",
        )
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"input: at most {MAX_INPUTS} inputs per request.", param="input")
    if all(_token(item) for item in value):
        return [], [value]
    texts: list[str] = []
    arrays: list[list[int]] = []
    for index, item in enumerate(value):
        if isinstance(item, str) and item:
            texts.append(item)
        elif isinstance(item, list) and item and all(_token(token) for token in item):
            arrays.append(item)
        else:
            raise InvalidRequest(
                f"input[{index}]: must be a non-empty string or a non-empty array of token ids.",
                param=f"input[{index}]",
            )
    if texts and arrays:
        raise InvalidRequest(
            "input: strings or token arrays, not both in one request.", param="input"
        )
    return texts, arrays


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 32


async def _read(request: Request) -> Embedding:
    parsed = Embedding(await entry.read_json_object(request))
    characters = sum(map(len, parsed.texts))
    if characters > MAX_CHARACTERS:
        raise InvalidRequest(
            f"input: at most {MAX_CHARACTERS} characters per request.", param="input"
        )
    if characters > _INLINE_CHARACTERS:
        parsed.tokens = await asyncio.to_thread(count_embedding_input, parsed.texts)
    else:
        parsed.tokens = count_embedding_input(parsed.texts)
    parsed.tokens += sum(map(len, parsed.token_arrays))
    return parsed


def _worst(parsed: Embedding, model: ModelEntry, _price: Price) -> Usage:
    if model.provider == "gemini":
        if parsed.token_arrays:
            raise InvalidRequest(
                "input: token arrays are OpenAI's vocabulary; send Gemini models text.",
                param="input",
            )
        return Usage(input_tokens=parsed.byte_bound())
    return Usage(input_tokens=parsed.tokens)


@units.router.post(EMBEDDINGS_PATH)
async def create_embedding(request: Request) -> Response:
    call, parsed = await units.begin(
        request, EMBEDDINGS_PATH, _read,
        kind="embedding", capability="embeddings", worst=_worst,
    )  # fmt: skip
    async with call.failures_recorded():
        if call.provider.dialect == "gemini":
            payload, usage = await _from_gemini(call, parsed)
            answer = orjson.dumps({**payload, "provider": call.provider.name})
        else:
            answer, usage = await _from_openai(call, parsed)
        await call.finish(usage)
    return JSONBody(answer, call.response_headers)


async def _from_openai(call: Call, parsed: Embedding) -> tuple[bytes, Usage]:
    """OpenAI's answer with `provider` added. Its vectors are most of it (1536 floats each):
    only its `usage`, which comes last, is read, unless the answer is not what OpenAI sends."""
    body = {**parsed.body, "model": call.route.upstream_model}
    response = await call.provider.send(UpstreamRequest("/embeddings", body, stream=False))
    raw = response.body.strip()
    reported = _usage_at_the_end(raw)
    if reported is None:
        payload = translated.json_answer(raw, call.provider.name)
        reported = units.reported_int(payload, "usage", "prompt_tokens")
        raw = orjson.dumps(payload)
    provider = orjson.dumps(call.provider.name)
    answer = raw[:-1] + b',"provider":' + provider + b"}"
    if reported is None:  # a compatible host without usage: what was counted, exactly
        return answer, Usage(input_tokens=parsed.tokens, estimated=True)
    return answer, Usage(input_tokens=reported)


def _usage_at_the_end(raw: bytes) -> int | None:
    """`usage.prompt_tokens` of a JSON object whose last member is `usage` (as OpenAI writes
    its embeddings); None for anything else (then the whole answer is parsed)."""
    if not (raw.startswith(b"{") and raw.endswith(b"}")):
        return None
    at = raw.rfind(b'"usage"')
    start = raw.find(b"{", at) if at >= 0 else -1
    if start < 0 or raw.rfind(b"}", 0, len(raw) - 1) < start:
        return None
    try:
        usage = orjson.loads(raw[start : len(raw) - 1].rstrip())
    except orjson.JSONDecodeError:
        return None
    return units.reported_int({"usage": usage}, "usage", "prompt_tokens")


async def _from_gemini(call: Call, parsed: Embedding) -> tuple[dict[str, Any], Usage]:
    model = call.route.upstream_model
    requests = []
    for text in parsed.texts:
        item: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if parsed.dimensions is not None:
            item["outputDimensionality"] = parsed.dimensions
        requests.append(item)
    upstream = UpstreamRequest(
        f"/v1beta/models/{model}:batchEmbedContents", {"requests": requests}, stream=False
    )
    response = await call.provider.send(upstream)
    answer = translated.json_answer(response.body, call.provider.name)
    embeddings = answer.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != len(parsed.texts):
        raise UpstreamError(f"The {call.provider.name} provider's embeddings do not match.")
    data = []
    for index, embedding in enumerate(embeddings):
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            values = []
        vector: Any = _base64(values) if parsed.base64 else values
        data.append({"object": "embedding", "index": index, "embedding": vector})
    reported = units.reported_int(answer, "usageMetadata", "promptTokenCount")
    usage = (
        Usage(input_tokens=reported)
        if reported is not None
        else Usage(input_tokens=parsed.tokens, estimated=True)
    )
    payload = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }
    return payload, usage


def _base64(values: list[Any]) -> str:
    """OpenAI's `encoding_format: "base64"`: the vector as little-endian float32s."""
    floats = [float(v) for v in values if isinstance(v, int | float)]
    return base64.b64encode(struct.pack(f"<{len(floats)}f", *floats)).decode()
