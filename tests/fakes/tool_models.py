"""Fakes for thread tool loops: each provider's fake upstream taught to chain tool calls, and a
webhook receiver for tools that verifies every signature.

Chaining: offered tools, the fake model calls the first one not called yet in the
conversation (all of them at once with `parallel`, OpenAI-style), and answers text quoting
every tool result once all have been called. Same wire formats as the parent fakes.

`context_window` (OpenAI flavor): a request whose prompt (counted as OpenAI counts, o200k)
plus its output cap exceeds it is refused with OpenAI's context_length_exceeded 400, as the
real API does; `prompt_tokens` records what each request counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.gateway.providers.mock import _example_value
from tests.fakes import gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.loopback import LoopbackServer
from tests.fakes.upstream import _ENCODING, FakeUpstream, Seen


def _chat_tokens(messages: list[dict[str, Any]]) -> int:
    total = 3
    for message in messages:
        total += 3 + len(_ENCODING.encode(message["role"]))
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if isinstance(content, str):
            total += len(_ENCODING.encode(content))
        for call in message.get("tool_calls") or []:
            total += len(_ENCODING.encode(call["function"]["name"] + call["function"]["arguments"]))
    return total


class ChainingUpstream(FakeUpstream):
    parallel: bool = False
    context_window: int | None = None

    def reset(self) -> None:
        super().reset()
        self.parallel, self.context_window = False, None
        self.prompt_tokens: list[int] = []

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = _chat_tokens(body["messages"])
        self.prompt_tokens.append(prompt)
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        if self.context_window is not None and prompt + cap > self.context_window:
            self.seen.append(Seen(request.path, body, dict(request.headers)))
            error = {"error": {"message": f"This model's maximum context length is "
                               f"{self.context_window} tokens. However, you requested "
                               f"{prompt + cap} tokens.", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}  # fmt: skip
            return web.json_response(error, status=400)
        if not body.get("tools"):
            return await super()._chat(request)  # aiohttp keeps the body read
        return await self._chain(request, body)

    async def _chain(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        self.seen.append(Seen(request.path, body, dict(request.headers)))
        called = {
            c["function"]["name"] for m in body["messages"] for c in m.get("tool_calls") or []
        }
        remaining = [t["function"] for t in body["tools"] if t["function"]["name"] not in called]
        if body.get("tool_choice") == "none":
            remaining = []
        calls = remaining if self.parallel else remaining[:1]
        usage = {"prompt_tokens": _chat_tokens(body["messages"]), "completion_tokens": 9,
                 "total_tokens": _chat_tokens(body["messages"]) + 9}  # fmt: skip
        self.reported.append(usage)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if calls:
            message["tool_calls"] = [
                {"id": f"call_{f['name']}_{len(called)}_{i}", "type": "function",
                 "function": {"name": f["name"],
                              "arguments": json.dumps(_example_value(f["parameters"]))}}
                for i, f in enumerate(calls)
            ]  # fmt: skip
        else:
            results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
            message["content"] = "Done: " + " | ".join(str(r) for r in results)
        finish = "tool_calls" if calls else "stop"
        head = {"id": "chatcmpl-chain", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**head, "object": "chat.completion", "usage": usage,
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": finish}]})  # fmt: skip
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**head, "object": "chat.completion.chunk"}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if calls:
            deltas += [
                {"tool_calls": [{"index": i, **c}]} for i, c in enumerate(message["tool_calls"])
            ]
        else:
            words = message["content"].split(" ")
            deltas += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        for delta in deltas:
            data = {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")
        last = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        await response.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        final = {**chunk, "choices": [], "usage": usage}
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\ndata: [DONE]\n\n")
        return response


class ChainingAnthropic(FakeAnthropic):
    def _reply(self, body: dict[str, Any]) -> Reply:
        messages = body["messages"]
        said = [m["content"] for m in messages if m["role"] == "assistant"]
        called = {b["name"] for c in said if isinstance(c, list) for b in c
                  if b.get("type") == "tool_use"}  # fmt: skip
        tools = [t for t in body.get("tools") or [] if t["name"] not in called]
        if (body.get("tool_choice") or {}).get("type") == "none":
            tools = []
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:20]
        if tools:
            tool = {"id": f"toolu_{tools[0]['name']}_{len(called)}", "name": tools[0]["name"],
                    "input": _example_value(tools[0]["input_schema"]) or {}}  # fmt: skip
            return Reply(f"msg_{digest}", body["model"], None, "", tool, self._usage(body, 12))
        results = [
            "".join(c.get("text", "") for c in b["content"]) if isinstance(b["content"], list)
            else str(b["content"])
            for m in messages if isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"
        ]  # fmt: skip
        text = "Done: " + " | ".join(results)
        return Reply(f"msg_{digest}", body["model"], None, text, None, self._usage(body, 9))


class ChainingGemini(FakeGemini):
    def _chunks(self, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        contents = body["contents"]
        called = {p["functionCall"]["name"] for c in contents if c.get("role") == "model"
                  for p in c.get("parts", []) if "functionCall" in p}  # fmt: skip
        declared = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
        remaining = [d for d in declared if d["name"] not in called and mode != "NONE"]
        response_id = hashlib.sha256(json.dumps(contents).encode()).hexdigest()[:22]
        usage = gemini_upstream._usage(10, 8)
        if remaining:
            call = {"name": remaining[0]["name"],
                    "args": _example_value(remaining[0].get("parameters")) or {}}  # fmt: skip
            parts = [{"functionCall": call, "thoughtSignature": gemini_upstream.SIGNATURE}]
            return [gemini_upstream._chunk(parts, usage, model, response_id, "STOP")]
        parts = [p for c in contents for p in c.get("parts", [])]
        results = [json.dumps(p["functionResponse"].get("response"), sort_keys=True)
                   for p in parts if "functionResponse" in p]  # fmt: skip
        text = "Done: " + " | ".join(results)
        return [gemini_upstream._chunk([{"text": text}], usage, model, response_id, "STOP")]


@dataclass
class ToolHooks(LoopbackServer):
    """Tool webhooks at `/tools/{name}`; `behaviour[name]`: "ok", "slow", "500", "invalid",
    "redirect", "huge" (2 MiB), "error" (answers is_error), or "sleep:<seconds>" then ok.
    Every call's signature is checked against `secrets[name]`; `calls` records (name, body,
    signature valid, idempotency key)."""

    secrets: dict[str, str] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any], bool, str]] = field(default_factory=list)
    active: int = 0
    most_active: int = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/tools/{name}", self._tool)

    def reset(self) -> None:
        self.secrets.clear()
        self.behaviour.clear()
        self.calls.clear()
        self.active = self.most_active = 0

    def url(self, name: str) -> str:
        return f"{self.base_url}/tools/{name}"

    def verified(self, name: str, raw: bytes, header: str) -> bool:
        parts = dict(item.split("=", 1) for item in header.split(","))
        stamp = int(parts["t"])
        expected = hmac.new(self.secrets[name].encode(), f"{stamp}.".encode() + raw, hashlib.sha256)
        return abs(time.time() - stamp) < 300 and hmac.compare_digest(
            parts["v1"], expected.hexdigest()
        )

    async def _tool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        body = json.loads(raw)
        valid = self.verified(name, raw, request.headers.get("X-Tollgate-Signature", "t=0,v1=x"))
        self.calls.append((name, body, valid, request.headers.get("Idempotency-Key", "")))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            how = self.behaviour.get(name, "ok")
            if how.startswith("sleep:"):
                await asyncio.sleep(float(how.split(":")[1]))
            if how == "slow":
                await asyncio.sleep(5)
            if how == "500":
                return web.Response(status=500, text="boom")
            if how == "invalid":
                return web.Response(text="{not json", content_type="application/json")
            if how == "redirect":  # to a place a follower would reach: it must not be followed
                raise web.HTTPFound(self.url("ok_target"))
            if how == "huge":
                return web.json_response({"content": "x" * (2 * 1024 * 1024)})
            if how == "error":
                return web.json_response({"content": f"{name} is down", "is_error": True})
            return web.json_response(
                {"content": f"{name}={json.dumps(body['input'], sort_keys=True)}"}
            )
        finally:
            self.active -= 1
