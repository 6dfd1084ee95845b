"""The built-in `mock` provider that answers every `qlk_test_` key (SPEC §4).

Deterministic text derived from the last user message, usage counted with the o200k vocabulary
(so it looks like a real provider's), tool calls when tools are offered (text once the last
turn is a tool result), streaming in real
OpenAI chunk shapes. It never touches the network and costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from api.gateway.providers import mock_media
from api.gateway.providers.base import UpstreamRequest, UpstreamResponse
from api.gateway.sse import SSEEvent
from api.gateway.tokens import count_chat_prompt, count_text


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p["text"]
                    for p in content
                    if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""


def _example_value(schema: Any) -> Any:
    """A value that satisfies a simple JSON schema: the required properties, filled in."""
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = [n for n in required if n in props] if isinstance(required, list) else []
        return {name: _example_value(props[name]) for name in names}
    examples = {"string": "example", "integer": 1, "number": 1, "boolean": True, "array": []}
    return examples.get(kind) if isinstance(kind, str) else None


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the mock calls: the named one, else the first offered; None if told not to."""
    offered = body.get("tools")
    functions: list[dict[str, Any]] = [
        t["function"]
        for t in (offered if isinstance(offered, list) else [])
        if isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
    ]
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        return next((f for f in functions if f.get("name") == wanted), functions[0])
    return functions[0]


class MockReply:
    def __init__(self, body: dict[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        self.model = str(body.get("model", "mock"))
        said = _last_user_text(messages)
        digest = hashlib.sha256(said.encode()).hexdigest()[:8]
        self.id = f"chatcmpl-mock{digest}"
        self.created = int(time.time())
        # A turn that answers a tool call gets text, as a real model would (no endless calls).
        answered = (
            bool(messages)
            and isinstance(messages[-1], dict)
            and (messages[-1].get("role") == "tool")
        )
        self.tool = None if answered else _chosen_tool(body)
        words = f"This is a mock response from Tollgate ({digest}). You said: {said[:200]}".split(
            " "
        )
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.finish_reason = "tool_calls" if self.tool else "stop"
        if isinstance(limit, int) and limit > 0 and not self.tool and len(words) > limit:
            words, self.finish_reason = words[:limit], "length"
        self.pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        self.text = "" if self.tool else "".join(self.pieces)
        self.arguments = (
            orjson.dumps(_example_value(self.tool.get("parameters"))).decode() if self.tool else ""
        )
        prompt = count_chat_prompt(messages, body.get("tools"))
        completion = count_text(self.text) if not self.tool else count_text(self.arguments) + 5
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def tool_calls(self) -> list[dict[str, Any]]:
        assert self.tool is not None
        return [{
            "id": f"call_mock{self.id[-8:]}", "type": "function",
            "function": {"name": self.tool.get("name", "tool"), "arguments": self.arguments},
        }]  # fmt: skip

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.text or None,
            "refusal": None,
        }
        if self.tool:
            message["tool_calls"] = self.tool_calls()
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }  # fmt: skip

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return orjson.dumps({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": choices, **extra,
        })  # fmt: skip

    def chunks(self, include_usage: bool) -> list[bytes]:
        out = [self.chunk({"role": "assistant", "content": "", "refusal": None})]
        if self.tool:
            out.append(self.chunk({"tool_calls": [{"index": 0, **self.tool_calls()[0]}]}))
        else:
            out += [self.chunk({"content": piece}) for piece in self.pieces]
        out.append(self.chunk({}, self.finish_reason))
        if include_usage:
            out.append(orjson.dumps({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": self.usage,
            }))  # fmt: skip
        return out


class MockStream:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = [*chunks, b"[DONE]"]

    async def events(self) -> AsyncIterator[SSEEvent]:
        while self._chunks:
            yield SSEEvent(self._chunks.pop(0))

    def rest(self) -> AsyncIterator[SSEEvent]:
        return self.events()

    def release(self) -> None:
        self._chunks = []

    def close(self) -> None:
        self._chunks = []


class MockProvider:
    name = "mock"
    dialect = "openai"

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        # Counting tokens is CPU work in proportion to the body: off the event loop.
        path = request.path
        if path == "/embeddings":
            answer = await asyncio.to_thread(mock_media.embeddings, request.body)
        elif path.startswith("/audio/"):
            answer, _ = await asyncio.to_thread(mock_media.transcription, request)
        elif path.startswith("/images/"):
            answer = mock_media.images(request.body)
        else:
            answer = (await asyncio.to_thread(MockReply, request.body)).completion()
        return UpstreamResponse(status=200, body=orjson.dumps(answer), headers={})

    async def open_bytes(self, request: UpstreamRequest) -> mock_media.MockBytes:
        return mock_media.MockBytes(mock_media.speech_audio(request.body))

    async def open_stream(self, request: UpstreamRequest) -> MockStream | mock_media.MockEvents:
        if request.path == "/audio/speech":
            return mock_media.MockEvents(mock_media.speech_events(request.body))
        if request.path.startswith("/audio/"):
            events = await asyncio.to_thread(mock_media.transcription_events, request)
            return mock_media.MockEvents(events)
        options = request.body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        reply = await asyncio.to_thread(MockReply, request.body)
        return MockStream(reply.chunks(include_usage))
