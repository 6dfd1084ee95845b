"""A fake Anthropic Messages upstream: `POST /v1/messages` and `POST /v1/messages/count_tokens`
on loopback, in the real wire format.

Base URL `http://127.0.0.1:PORT` (the Anthropic SDK adds `/v1/messages`). It checks the key
(`x-api-key`, or `Authorization: Bearer` as newer SDKs send it) and that `anthropic-version` is
present, answers a tool call when tools are offered and the last turn is not a
tool result, else text (quoting the tool result when there is one), a signed thinking block when
thinking is enabled, and reports usage with cache reads and writes: a system block carrying
`cache_control` is written on first sight and read afterwards.

Failure modes, from `mode` or per request from an `x-fake-mode` header:
"400", "401", "429" (retry-after 14), "500", "529" (overloaded), "midstream_error" (an
`event: error` overloaded_error after the first text delta), "drop" (the connection dies
mid-stream).
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
from tests.fakes.upstream import client_port

API_KEY = "sk-ant-fake"
_ERRORS = {
    "400": "anthropic/09_error_400_invalid_request.http",
    "401": "anthropic/08_error_401_authentication.http",
    "429": "anthropic/07_error_429_rate_limit.http",
    "529": "anthropic/06_error_529_overloaded.http",
}
SIGNATURE = "EqQBCkYIBRgCIkB0ZmFrZS1zaWduYXR1cmU="


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers={"request-id": "req_fake"})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "text":
            parts.append(block["text"])
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content", "")))
    return " ".join(parts)


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class Reply:
    id: str
    model: str
    thinking: str | None
    text: str
    tool: dict[str, Any] | None  # {"id", "name", "input"}
    usage: dict[str, Any]

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool else "end_turn"

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": self.thinking, "signature": SIGNATURE})
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        if self.tool:
            blocks.append({"type": "tool_use", **self.tool})
        return blocks

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": self.content(), "stop_reason": self.stop_reason, "stop_sequence": None,
            "usage": self.usage,
        }  # fmt: skip


@dataclass
class FakeAnthropic(LoopbackServer):
    mode: str = "ok"
    api_key: str = API_KEY
    chunk_delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    reported: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    _cached: set[str] = field(default_factory=set)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_get("/v1/models", self._models)

    def reset(self) -> None:
        self.mode = "ok"
        self.api_key = API_KEY
        self.seen.clear()
        self.reported.clear()
        self._cached.clear()
        self.disconnects = 0

    # handlers ------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        """The check a tenant's own key gets on save."""
        if request.headers.get("x-api-key") != self.api_key:
            status, headers, payload = http_fixture(_ERRORS["401"])
            return web.Response(status=status, body=payload, headers=headers)
        return web.json_response({"data": [{"type": "model", "id": "claude-sonnet-4-20250514"}],
                                  "has_more": False})  # fmt: skip

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "invalid_request_error", "The body is not JSON.")
        self.seen.append(
            Seen(
                request.path, dict(request.query), body, dict(request.headers), client_port(request)
            )
        )
        mode = request.headers.get("x-fake-mode", self.mode)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            mode = "401"
        if mode in _ERRORS:
            status, headers, payload = http_fixture(_ERRORS[mode])
            return web.Response(status=status, body=payload, headers=headers)
        if mode == "500":
            return _error(500, "api_error", "Internal server error")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error(400, "invalid_request_error", f"{name}: Field required")
        reply = self._reply(body)
        self.reported.append(reply.usage)
        if body.get("stream"):
            return await self._stream(request, reply, mode)
        return web.json_response(reply.message())

    async def _count_tokens(self, request: web.Request) -> web.Response:
        """The input `/v1/messages` would bill (cache reads and writes included), uncached."""
        body = await request.json()
        self.seen.append(
            Seen(
                request.path, dict(request.query), body, dict(request.headers), client_port(request)
            )
        )
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            status, headers, payload = http_fixture(_ERRORS["401"])
            return web.Response(status=status, body=payload, headers=headers)
        if "max_tokens" in body:
            return _error(
                400, "invalid_request_error", "max_tokens: Extra inputs are not permitted"
            )
        system = body.get("system") or []
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        total = sum(_tokens(_text_of(m.get("content"))) for m in body.get("messages", []))
        total += sum(_tokens(b.get("text", "")) for b in blocks if isinstance(b, dict))
        return web.json_response({"input_tokens": total})

    def _reply(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        last = messages[-1] if messages else {"content": ""}
        said = _text_of(last.get("content"))
        answered = isinstance(last.get("content"), list) and any(
            b.get("type") == "tool_result" for b in last["content"]
        )
        tool = self._tool(body) if not answered else None
        text = f"The tool said: {said}" if answered else ("" if tool else f"You said: {said}")
        thinking = None
        if (body.get("thinking") or {}).get("type") == "enabled":
            thinking = "Let me think about that."
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:20]
        output = _tokens(text) + (_tokens(thinking) if thinking else 0)
        output += len(json.dumps(tool["input"])) // 4 + 10 if tool else 0
        return Reply(f"msg_fake{digest}", body["model"], thinking, text, tool,
                     self._usage(body, output))  # fmt: skip

    def _tool(self, body: dict[str, Any]) -> dict[str, Any] | None:
        tools = [t for t in body.get("tools") or [] if "input_schema" in t]
        choice = body.get("tool_choice") or {"type": "auto"}
        if not tools or choice.get("type") == "none":
            return None
        chosen = next((t for t in tools if t["name"] == choice.get("name")), tools[0])
        call_id = "toolu_fake" + hashlib.sha256(chosen["name"].encode()).hexdigest()[:16]
        return {"id": call_id, "name": chosen["name"],
                "input": _example_value(chosen["input_schema"]) or {}}  # fmt: skip

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        system = body.get("system") or []
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
        cached = [b for b in blocks if isinstance(b, dict) and b.get("cache_control")]
        prefix = sum(_tokens(b.get("text", "")) for b in blocks) if cached else 0
        key = hashlib.sha256(json.dumps(blocks, sort_keys=True).encode()).hexdigest()
        read = prefix if key in self._cached else 0
        written = prefix - read
        if cached:
            self._cached.add(key)
        fresh = sum(_tokens(_text_of(m.get("content"))) for m in body["messages"])
        fresh += 0 if cached else sum(_tokens(b.get("text", "")) for b in blocks)
        return {
            "input_tokens": fresh, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written,
                               "ephemeral_1h_input_tokens": 0},
            "output_tokens": output, "service_tier": "standard",
        }  # fmt: skip

    # streaming -----------------------------------------------------------------------------
    async def _stream(self, request: web.Request, reply: Reply, mode: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "request-id": "req_fake"})  # fmt: skip
        await response.prepare(request)
        try:
            for index, event in enumerate(self._events(reply, mode)):
                if mode == "drop" and index == 4:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(event)
                await asyncio.sleep(self.chunk_delay)
        except ConnectionError:
            self.disconnects += 1
        return response

    def _events(self, reply: Reply, mode: str) -> list[bytes]:
        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

        start = {**reply.message(), "content": [], "stop_reason": None,
                 "usage": {**reply.usage, "output_tokens": 1}}  # fmt: skip
        out = [ev("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(reply.content()):
            out += self._block(ev, index, block)
            if index == 0:
                out.insert(2, b'event: ping\ndata: {"type": "ping"}\n\n')
            if mode == "midstream_error" and block["type"] == "text":
                error = {"type": "error", "error": {"details": None, "type": "overloaded_error",
                                                    "message": "Overloaded"}}  # fmt: skip
                first = next(i for i, e in enumerate(out) if b'"text_delta"' in e)
                return [*out[: first + 1], ev("error", error)]  # the block never stops
        delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
        usage = {"output_tokens": reply.usage["output_tokens"]}
        out.append(ev("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        return [*out, ev("message_stop", {"type": "message_stop"})]

    @staticmethod
    def _block(ev: Any, index: int, block: dict[str, Any]) -> list[bytes]:
        empty = {"text": {"type": "text", "text": ""},
                 "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "tool_use": {**block, "input": {}}}[block["type"]]  # fmt: skip
        out = [
            ev(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        ]
        if block["type"] == "tool_use":
            raw = json.dumps(block["input"])
            third = max(1, len(raw) // 3)
            pieces = ["", raw[:third], raw[third : 2 * third], raw[2 * third :]]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        elif block["type"] == "thinking":
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w}
                      for i, w in enumerate(words)]  # fmt: skip
        out += [
            ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
        return out
