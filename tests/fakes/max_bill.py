"""An upstream that bills every request the most its fields allow (OpenAI chat and Responses,
Anthropic Messages, Gemini generateContent), for testing that a cap holds for every request
shape.

It answers with usage at the ceiling of what the request permits:
every output token of every answer (`n`), the prompt at its byte bound (no tokenizer counts
more), the whole context window once a server tool or a document may fill it, every input
token written to the cache at the dearest write a `cache_control` asks for, and every web
search `max_uses` allows (unbounded when the request sets none). It records what it billed.
A stream sends one short text event, then, `delay_seconds` later, its usage: nearly all of
the output is reasoning the client never sees (a thinking model's).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from api.gateway.tokens import prompt_token_bound

CONTEXT = {"claude-sonnet-4-20250514": 200_000, "gpt-4o": 128_000, "gpt-4o-mini": 128_000,
           "gemini-2.5-flash": 1_048_576}  # fmt: skip
UNBOUNDED_SEARCHES = 50  # what a search tool without `max_uses` could run up
TOOL_USE_PROMPT, SERVER_TOOL_PROMPT = 346, 700  # Anthropic's documented tool system prompts


def _nodes(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value] + [n for item in value.values() for n in _nodes(item)]
    if isinstance(value, list):
        return [n for item in value for n in _nodes(item)]
    return []


@dataclass
class MaxBiller:
    seen: list[dict[str, Any]] = field(default_factory=list)
    billed: list[dict[str, Any]] = field(default_factory=list)
    # Each answer takes this long, so that concurrent requests are all in flight at once.
    delay_seconds: float = 0.0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/openai/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/openai/v1/responses", self._responses, methods=["POST"]),
                Route("/anthropic/v1/messages", self._messages, methods=["POST"]),
                Route("/gemini/v1beta/models/{target}", self._gemini, methods=["POST"]),
            ]
        )

    def _input(self, body: dict[str, Any], *parts: Any) -> int:
        tokens = prompt_token_bound(list(parts), body.get("tools"))
        nodes = _nodes(list(parts))
        if any(n.get("type") in ("document", "input_file") for n in nodes):
            tokens = max(tokens, CONTEXT[body["model"]])
        return tokens

    async def _chat(self, request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        self.seen.append(body)
        if body.get("stream"):
            return StreamingResponse(self._chat_stream(body), media_type="text/event-stream")
        await asyncio.sleep(self.delay_seconds)
        choices = body.get("n") or 1
        output = (body.get("max_completion_tokens") or body["max_tokens"]) * choices
        usage = {
            "prompt_tokens": self._input(body, *body["messages"]),
            "completion_tokens": output,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + output
        self.billed.append({"model": body["model"], **usage})
        message = {"role": "assistant", "content": "x"}
        choice = {"index": 0, "message": message, "finish_reason": "length"}
        return JSONResponse(
            {"id": "chatcmpl-max", "object": "chat.completion", "created": 1,
             "model": body["model"], "choices": [choice], "usage": usage}
        )  # fmt: skip

    async def _chat_stream(self, body: dict[str, Any]) -> Any:
        def chunk(delta: dict[str, Any], **extra: Any) -> bytes:
            data = {
                "id": "chatcmpl-max",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta}],
                **extra,
            }
            return b"data: " + json.dumps(data).encode() + b"\n\n"  # fmt: skip

        yield chunk({"role": "assistant", "content": "Hi"})
        await asyncio.sleep(self.delay_seconds)
        output = body.get("max_completion_tokens") or body["max_tokens"]
        usage = {"prompt_tokens": self._input(body, *body["messages"]), "completion_tokens": output,
                 "completion_tokens_details": {"reasoning_tokens": output - 1}}  # fmt: skip
        self.billed.append({"model": body["model"], **usage})
        yield chunk({}, usage=None) + b"data: " + json.dumps(
            {"id": "chatcmpl-max", "object": "chat.completion.chunk", "created": 1,
             "model": body["model"], "choices": [], "usage": usage}
        ).encode() + b"\n\ndata: [DONE]\n\n"  # fmt: skip

    async def _responses(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.seen.append(body)
        await asyncio.sleep(self.delay_seconds)
        output = body["max_output_tokens"]
        prompt = self._input(body, body.get("instructions"), body["input"])
        usage = {
            "input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        }  # fmt: skip
        self.billed.append({"model": body["model"], **usage})
        text = {"type": "output_text", "text": "x", "annotations": []}
        item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                "content": [text]}  # fmt: skip
        return JSONResponse(
            {"id": f"resp_max{len(self.seen)}", "object": "response", "created_at": 1,
             "status": "incomplete",
             "model": body["model"], "output": [item], "usage": usage}
        )  # fmt: skip

    async def _messages(self, request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        self.seen.append(body)
        if body.get("stream"):
            return StreamingResponse(self._messages_stream(body), media_type="text/event-stream")
        await asyncio.sleep(self.delay_seconds)
        tools = body.get("tools") or []
        searches = 0
        prompt = self._input(body, body.get("system"), *body["messages"])
        if tools:
            prompt += TOOL_USE_PROMPT
        for tool in tools:
            kind = str(tool.get("type", "custom"))
            if kind != "custom":
                prompt += SERVER_TOOL_PROMPT
            if kind.startswith(("web_search", "web_fetch")):
                prompt = max(prompt, CONTEXT[body["model"]])
            if kind.startswith("web_search"):
                searches += tool.get("max_uses", UNBOUNDED_SEARCHES)
        controls = [n["cache_control"] for n in _nodes(body) if "cache_control" in n]
        hour = any(isinstance(c, dict) and c.get("ttl") == "1h" for c in controls)
        written = prompt if controls else 0
        usage = {
            "input_tokens": prompt - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": 0,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0 if hour else written,
                "ephemeral_1h_input_tokens": written if hour else 0,
            },
            "output_tokens": body["max_tokens"],
            "server_tool_use": {"web_search_requests": searches},
        }
        self.billed.append({"model": body["model"], **usage})
        return JSONResponse(
            {"id": "msg_max", "type": "message", "role": "assistant", "model": body["model"],
             "content": [{"type": "text", "text": "x"}], "stop_reason": "max_tokens",
             "stop_sequence": None, "usage": usage}
        )  # fmt: skip

    async def _messages_stream(self, body: dict[str, Any]) -> Any:
        def event(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

        prompt = self._input(body, body.get("system"), *body["messages"])
        start = {"id": "msg_max", "type": "message", "role": "assistant", "model": body["model"],
                 "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {"input_tokens": prompt, "output_tokens": 1}}  # fmt: skip
        yield (
            event("message_start", {"message": start})
            + event(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            + event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
            )
        )
        await asyncio.sleep(self.delay_seconds)
        usage = {"input_tokens": prompt, "output_tokens": body["max_tokens"]}
        self.billed.append({"model": body["model"], **usage})
        yield event("content_block_stop", {"index": 0}) + event(
            "message_delta", {"delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                              "usage": {"output_tokens": body["max_tokens"]}}
        ) + event("message_stop", {})  # fmt: skip

    async def _gemini(self, request: Request) -> JSONResponse:
        """Every candidate's whole `maxOutputTokens` (thoughts count within it, nearly all of
        it here), and the context window once a file by URL may fill it."""
        body = await request.json()
        model = request.path_params["target"].partition(":")[0]
        self.seen.append({"model": model, **body})
        await asyncio.sleep(self.delay_seconds)
        generation = body["generationConfig"]
        output = generation["maxOutputTokens"] * generation.get("candidateCount", 1)
        prompt = self._input(
            {**body, "model": model}, body.get("systemInstruction"), *body["contents"]
        )
        if any("fileData" in node for node in _nodes(body["contents"])):
            prompt = max(prompt, CONTEXT[model])
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": 1,
                 "thoughtsTokenCount": output - 1, "totalTokenCount": prompt + output}  # fmt: skip
        self.billed.append({"model": model, **usage})
        candidate = {"content": {"parts": [{"text": "x"}], "role": "model"},
                     "finishReason": "MAX_TOKENS", "index": 0}  # fmt: skip
        return JSONResponse(
            {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
             "responseId": "max"}
        )  # fmt: skip
