"""A fake Gemini Developer API upstream on loopback, in the real wire format.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (CRLF-framed `data:` events;
         without alt=sse, one JSON array as Gemini sends it)
    POST /v1beta/models/{model}:countTokens   (`contents` or `generateContentRequest`; counted
         as the answers' `promptTokenCount` counts them)
    POST /v1beta/models/{model}:embedContent   (`content.parts[].text`, `taskType`, `title`,
         `outputDimensionality`) -> `{"embedding": {"values": [...]}, "usageMetadata": ...}`
    POST /v1beta/models/{model}:batchEmbedContents   (`requests[]`, each with `model:
         "models/{model}"`) -> `{"embeddings": [{"values": [...]}, ...], "usageMetadata": ...}`

Base URL `http://127.0.0.1:PORT`. It checks `x-goog-api-key` (or `?key=`), calls the first
allowed function (whole, with a `thoughtSignature`, no call id) when tools are declared, calling
is not NONE and the last turn is not a functionResponse, else answers text (quoting the function
response when there is one). Usage: `candidatesTokenCount` excludes `thoughtsTokenCount`, and
every stream chunk carries the cumulative counts.

Failure modes, from `mode` or per request from an `x-fake-mode` header:
"400" (API_KEY_INVALID), "429" (RESOURCE_EXHAUSTED with RetryInfo 27s, no Retry-After header),
"500" (INTERNAL), "503" (UNAVAILABLE, overloaded), "drop" (the connection dies mid-stream).

Embeddings: the vector of a content is `embedding_vector(model, text, dims)` of
`tests/fakes/media.py` (`text` its parts' texts joined by a space, `model` without "models/"),
`dims` the `outputDimensionality` or the model's own (3072 for gemini-embedding-001, 768 for
text-embedding-004). Only models named "...embedding..." embed (any other: 404, as Gemini says
for a model without the method); a batch holds at most 100 requests, each naming the URL's model.
Token usage: the Gemini API reference documents `usageMetadata` (EmbeddingUsageMetadata:
`promptTokenCount` and `promptTokenDetails`, per modality) on both answers; older API surfaces
send none, which `embed_usage = False` reproduces. The count is this fake's word count, summed
over a batch. Embedding requests are recorded in `seen` like the others, and what they billed in
`embedded` (the usageMetadata, present or not).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.gateway.providers.mock import _example_value
from tests.fakes.loopback import LoopbackServer, Seen, http_fixture
from tests.fakes.media import GEMINI_EMBEDDING_DIMENSIONS, GEMINI_MAX_BATCH, embedding_vector

API_KEY = "AIza-fake"
SIGNATURE = "CiQB0e2Kfake"
THOUGHTS = 21  # thinking tokens every answer reports
_ERRORS = {
    "400": "gemini/08_error_400_api_key_invalid.http",
    "429": "gemini/09_error_429_resource_exhausted.http",
    "500": "gemini/10_error_500_internal.http",
    "503": "gemini/11_error_503_unavailable_overloaded.http",
}


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(parts: list[dict[str, Any]]) -> str:
    out = []
    for part in parts:
        if "text" in part:
            out.append(part["text"])
        elif "functionResponse" in part:
            out.append(json.dumps(part["functionResponse"].get("response"), sort_keys=True))
    return " ".join(out)


@dataclass
class FakeGemini(LoopbackServer):
    mode: str = "ok"
    api_key: str = API_KEY
    chunk_delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    # Embeddings: whether answers carry `usageMetadata`; what each embedding request billed.
    embed_usage: bool = True
    embedded: list[dict[str, Any]] = field(default_factory=list)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._generate)

    def reset(self) -> None:
        self.mode = "ok"
        self.seen.clear()
        self.reported.clear()
        self.disconnects = 0
        self.embed_usage = True
        self.embedded.clear()

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action not in ("generateContent", "streamGenerateContent", "countTokens", *_EMBED):
            return _status(404, "NOT_FOUND", f"Unknown method {action!r}.")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _status(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        self.seen.append(Seen(request.path, dict(request.query), body, dict(request.headers)))
        mode = request.headers.get("x-fake-mode", self.mode)
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key != self.api_key:
            mode = "400"
        if mode in _ERRORS:
            status, headers, payload = http_fixture(_ERRORS[mode])
            return web.Response(status=status, body=payload, headers=headers)
        if action in _EMBED:
            return self._embed(model, action, body)
        if action == "countTokens":
            inner = body.get("generateContentRequest") or body
            if not str(inner.get("model", model)).endswith(model):
                return _status(400, "INVALID_ARGUMENT", "generateContentRequest.model differs.")
            total = sum(_tokens(_text_of(c.get("parts", []))) for c in inner.get("contents", []))
            return web.json_response({"totalTokens": total, "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": total}]})  # fmt: skip
        if not isinstance(body.get("contents"), list) or not body["contents"]:
            return _status(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: "
                           "contents is not specified")  # fmt: skip
        chunks = self._chunks(model, body)
        self.reported.append(chunks[-1]["usageMetadata"])
        if action == "generateContent":
            merged = _merge(chunks)
            if mode == "unreadable":  # billed, but with a part no client format has
                merged["candidates"][0]["content"]["parts"] = [{"mysteryPart": {"x": 1}}]
            return web.json_response(merged)
        if request.query.get("alt") != "sse":
            return web.json_response(chunks)  # one JSON array, as Gemini sends without alt=sse
        return await self._stream(request, chunks, mode)

    def _embed(self, model: str, action: str, body: dict[str, Any]) -> web.Response:
        native = _embedding_dimensions(model)
        if native is None:
            return _status(404, "NOT_FOUND", f"models/{model} is not found for API version "
                           f"v1beta, or is not supported for {action}. Call ListModels to see the "
                           "list of available models and their supported methods.")  # fmt: skip
        requests: Any = [body]
        places = ["EmbedContentRequest"]
        if action == "batchEmbedContents":
            requests = body.get("requests") if isinstance(body, dict) else None
            refused = _batch_refused(model, requests)
            if refused is not None:
                return refused
            places = [f"BatchEmbedContentsRequest.requests[{i}]" for i in range(len(requests))]
        vectors, tokens = [], 0
        for place, request in zip(places, requests, strict=True):
            text = _embed_text(request)
            if text is None:
                return _status(400, "INVALID_ARGUMENT", f"* {place}.content: contents is not "
                               "specified")  # fmt: skip
            dims = request.get("outputDimensionality") or native
            if not isinstance(dims, int) or not 1 <= dims <= native:
                return _status(400, "INVALID_ARGUMENT", f"* {place}.output_dimensionality: must "
                               f"be between 1 and {native}")  # fmt: skip
            vectors.append({"values": embedding_vector(model, text, dims)})
            tokens += _tokens(text)
        usage = {"promptTokenCount": tokens,
                 "promptTokenDetails": [{"modality": "TEXT", "tokenCount": tokens}]}  # fmt: skip
        self.embedded.append(usage if self.embed_usage else {})
        answer: dict[str, Any] = (
            {"embedding": vectors[0]} if action == "embedContent" else {"embeddings": vectors}
        )
        if self.embed_usage:
            answer["usageMetadata"] = usage
        return web.json_response(answer)

    def _chunks(self, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        contents = body["contents"]
        last = contents[-1].get("parts", [])
        answered = any("functionResponse" in p for p in last)
        call = None if answered else self._call(body)
        said = _text_of(last)
        prompt = sum(_tokens(_text_of(c.get("parts", []))) for c in contents)
        response_id = hashlib.sha256(json.dumps(contents).encode()).hexdigest()[:22]
        if call is not None:
            usage = _usage(prompt, 12)
            parts = [{"functionCall": call, "thoughtSignature": SIGNATURE}]
            return [_chunk(parts, usage, model, response_id, "STOP")]
        text = f"The function said: {said}" if answered else f"You said: {said}"
        words = text.split(" ")
        pieces = [" ".join(words[i : i + 3]) for i in range(0, len(words), 3)]
        chunks, sent = [], 0
        for i, piece in enumerate(pieces):
            piece = piece if i == 0 else " " + piece
            sent += _tokens(piece)
            finish = "STOP" if i == len(pieces) - 1 else None
            chunks.append(
                _chunk([{"text": piece}], _usage(prompt, sent), model, response_id, finish)
            )
        return chunks

    def _call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        declarations = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        if not declarations or config.get("mode") == "NONE":
            return None
        allowed = config.get("allowedFunctionNames") or [declarations[0]["name"]]
        chosen = next((d for d in declarations if d["name"] == allowed[0]), declarations[0])
        return {"name": chosen["name"], "args": _example_value(chosen.get("parameters")) or {}}

    async def _stream(
        self, request: web.Request, chunks: list[dict[str, Any]], mode: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index, chunk in enumerate(chunks):
                if mode == "drop" and index == 1:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
                await asyncio.sleep(self.chunk_delay)
        except ConnectionError:
            self.disconnects += 1
        return response


_EMBED = ("embedContent", "batchEmbedContents")


def _embedding_dimensions(model: str) -> int | None:
    """A model's own dimensionality; None for a model that does not embed."""
    if "embedding" not in model:
        return None
    return GEMINI_EMBEDDING_DIMENSIONS.get(model, 3072)


def _embed_text(request: Any) -> str | None:
    """A request's content as one text (its parts' texts joined by a space); None if it has
    no text part."""
    content = request.get("content") if isinstance(request, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    texts = [
        p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]
    return " ".join(texts) if texts else None


def _batch_refused(model: str, requests: Any) -> web.Response | None:
    if not isinstance(requests, list) or not requests:
        return _status(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: "
                       "requests is not specified")  # fmt: skip
    if len(requests) > GEMINI_MAX_BATCH:
        return _status(400, "INVALID_ARGUMENT", f"* BatchEmbedContentsRequest.requests: at most "
                       f"{GEMINI_MAX_BATCH} requests can be in one batch")  # fmt: skip
    for index, request in enumerate(requests):
        named = request.get("model") if isinstance(request, dict) else None
        if named != f"models/{model}":
            return _status(400, "INVALID_ARGUMENT", f"Model {named!r} of request {index} does not "
                           f"match the batch's model models/{model}.")  # fmt: skip
    return None


def _status(code: int, status: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "status": status}},
                             status=code)  # fmt: skip


def _usage(prompt: int, candidates: int) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt, "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + THOUGHTS,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "thoughtsTokenCount": THOUGHTS,
    }  # fmt: skip


def _chunk(parts: list[dict[str, Any]], usage: dict[str, Any], model: str, response_id: str,
           finish: str | None) -> dict[str, Any]:  # fmt: skip
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": response_id}  # fmt: skip


def _merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming answer: the chunks' parts joined, the last chunk's usage."""
    text = "".join(
        p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"]
    )
    last = chunks[-1]
    parts = last["candidates"][0]["content"]["parts"] if not text else [{"text": text}]
    return _chunk(parts, last["usageMetadata"], last["modelVersion"], last["responseId"], "STOP")
