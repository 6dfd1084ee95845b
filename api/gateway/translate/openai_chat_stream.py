"""Chat Completions streams: chunks → IR events (`StreamDecoder`, DeepSeek included), IR events →
chunks the OpenAI SDK reads (`StreamEncoder`): a role chunk, deltas, a `finish_reason` chunk, a
usage chunk with `choices: []`, then `data: [DONE]`; an error is one `data: {"error": …}`.

Decoders: `feed(event)` per upstream SSE event, `close()` once the body ends, `usage` so far
(for metering a stream cut off before its end)."""

from __future__ import annotations

from typing import Any

from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import event_json, sse
from api.gateway.translate.openai_chat import FINISH_OUT, finish_in, render_usage
from api.gateway.usage import from_openai


class StreamDecoder:
    """Chat chunks → IR events. Usage may come on the finish chunk (DeepSeek) or after it."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._started = False
        self._ended = False
        self._finish: str | None = None
        self._blocks = 0
        self._open: tuple[str, int] | None = None  # ("text"|"thinking"|"tool:<n>", block index)
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index → block index

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]:
        if self._ended:
            return []
        if event.data.strip() == b"[DONE]":
            return self._end()
        chunk = event_json(event.data)
        if isinstance(chunk.get("error"), dict):
            self._ended = True
            return [ir.StreamError("api_error", str(chunk["error"].get("message", "")))]
        out: list[ir.StreamEvent] = []
        if not self._started:
            self._started = True
            out.append(ir.MessageStart(str(chunk.get("id", "")), str(chunk.get("model", ""))))
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        if isinstance(chunk.get("usage"), dict):
            self.usage = from_openai(chunk["usage"])
        return out

    def close(self) -> list[ir.StreamEvent]:
        return self._end() if self._finish is not None and not self._ended else []

    def _choice(self, choice: dict[str, Any]) -> list[ir.StreamEvent]:
        out: list[ir.StreamEvent] = []
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        # A refusal is what the model said instead of an answer: relay it as text.
        for key, kind in (
            ("reasoning_content", "thinking"),
            ("content", "text"),
            ("refusal", "text"),
        ):
            piece = delta.get(key)
            if isinstance(piece, str) and piece:
                index = self._ensure(kind, out)
                out.append(
                    ir.ThinkingDelta(index, piece)
                    if kind == "thinking"
                    else ir.TextDelta(index, piece)
                )
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                out += self._tool_call(call)
        if isinstance(choice.get("finish_reason"), str):
            self._finish = choice["finish_reason"]
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[ir.StreamEvent]:
        out: list[ir.StreamEvent] = []
        position = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        if position not in self._tools:
            self._close(out)
            index = self._tools[position] = self._next_block()
            out.append(
                ir.BlockStart(
                    index,
                    "tool_call",
                    id=str(call.get("id", "")),
                    name=str(function.get("name", "")),
                )
            )
            self._open = (f"tool:{position}", index)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(ir.ToolArgsDelta(self._tools[position], arguments))
        return out

    def _ensure(self, kind: str, out: list[ir.StreamEvent]) -> int:
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._close(out)
        index = self._next_block()
        out.append(ir.BlockStart(index, "thinking" if kind == "thinking" else "text"))
        self._open = (kind, index)
        return index

    def _next_block(self) -> int:
        self._blocks += 1
        return self._blocks - 1

    def _close(self, out: list[ir.StreamEvent]) -> None:
        if self._open is not None:
            out.append(ir.BlockStop(self._open[1]))
            self._open = None

    def _end(self) -> list[ir.StreamEvent]:
        out: list[ir.StreamEvent] = []
        self._close(out)
        self._ended = True
        out.append(ir.MessageEnd(finish_in(self._finish or "stop", bool(self._tools)), self.usage))
        return out


class StreamEncoder:
    """IR events → chat chunks: role chunk first, `finish_reason` chunk, usage chunk, [DONE]."""

    def __init__(self, *, include_usage: bool = True, created: int = 0) -> None:
        self._include_usage = include_usage
        self._created = created
        self._id = ""
        self._model = ""
        self._tools: dict[int, int] = {}  # block index → tool_calls index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    def feed(self, event: ir.StreamEvent) -> bytes:
        if isinstance(event, ir.MessageStart):
            self._id, self._model = event.id, event.model
            return self._chunk({"role": "assistant", "content": ""})
        if isinstance(event, ir.BlockStart) and event.kind == "tool_call":
            position = self._tools[event.index] = len(self._tools)
            call = {
                "index": position,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, ir.TextDelta):
            return self._chunk({"content": event.text})
        if isinstance(event, ir.ThinkingDelta):
            return self._chunk({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, ir.ToolArgsDelta) and event.index in self._tools:
            call = {"index": self._tools[event.index], "function": {"arguments": event.arguments}}
            return self._chunk({"tool_calls": [call]})
        if isinstance(event, ir.MessageEnd):
            out = self._chunk({}, FINISH_OUT.get(event.stop_reason, "stop"))
            if self._include_usage:
                out += sse(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": render_usage(event.usage),
                    }
                )
            return out + b"data: [DONE]\n\n"
        if isinstance(event, ir.StreamError):
            kind = ir.ERROR_KINDS.get(event.kind, ir.ERROR_KINDS["api_error"])[1]
            return sse(
                {
                    "error": {
                        "message": event.message,
                        "type": kind,
                        "code": event.kind,
                        "param": None,
                    }
                }
            )
        return b""
