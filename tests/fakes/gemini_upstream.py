"""A fake Gemini Developer API upstream on loopback, in the real wire format.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (CRLF-framed `data:` events;
         without alt=sse, one JSON array as Gemini sends it)
    POST /v1beta/models/{model}:countTokens   (`contents` or `generateContentRequest`; counted
         as the answers' `promptTokenCount` counts them)

Base URL `http://127.0.0.1:PORT`. It checks `x-goog-api-key` (or `?key=`), calls the first
allowed function (whole, with a `thoughtSignature`, no call id) when tools are declared, calling
is not NONE and the last turn is not a functionResponse, else answers text (quoting the function
response when there is one). Usage: `candidatesTokenCount` excludes `thoughtsTokenCount`, and
every stream chunk carries the cumulative counts.

Failure modes, from `mode` or per request from an `x-fake-mode` header:
"400" (API_KEY_INVALID), "429" (RESOURCE_EXHAUSTED with RetryInfo 27s, no Retry-After header),
"500" (INTERNAL), "503" (UNAVAILABLE, overloaded), "drop" (the connection dies mid-stream).
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

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._generate)

    def reset(self) -> None:
        self.mode = "ok"
        self.seen.clear()
        self.reported.clear()
        self.disconnects = 0

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, action = request.match_info["target"].partition(":")
        if action not in ("generateContent", "streamGenerateContent", "countTokens"):
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
