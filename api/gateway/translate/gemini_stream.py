"""Gemini `streamGenerateContent?alt=sse` chunks → IR events (`StreamDecoder`). No encoder: no
client endpoint speaks Gemini.

Decoders: `feed(event)` per upstream SSE event, `close()` once the body ends, `usage` so far
(for metering a stream cut off before its end)."""

from __future__ import annotations

from typing import Any

from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import event_json
from api.gateway.translate.gemini import call_id, parse_part, stop_reason, usage_from


class StreamDecoder:
    """`streamGenerateContent?alt=sse` chunks → IR events.

    Every chunk is a whole response fragment: text arrives in pieces, function calls arrive
    whole, and every chunk repeats a cumulative `usageMetadata` (the last one counts). There is
    no terminator event, so `close()` at the end of the body emits the MessageEnd.
    """

    def __init__(self) -> None:
        self.usage = Usage()
        self._started = False
        self._ended = False
        self._id = ""
        self._finish: Any = None
        self._blocks = 0
        self._open: tuple[str, int] | None = None
        self._calls: list[ir.ToolCall] = []

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]:
        if self._ended:
            return []
        chunk = event_json(event.data)
        if isinstance(chunk.get("error"), dict):
            self._ended = True
            status = chunk["error"].get("status")
            kind = {"UNAVAILABLE": "overloaded", "RESOURCE_EXHAUSTED": "rate_limit"}.get(
                str(status), "api_error"
            )
            return [ir.StreamError(kind, str(chunk["error"].get("message", "")))]
        out: list[ir.StreamEvent] = []
        if not self._started:
            self._started = True
            self._id = str(chunk.get("responseId", ""))
            out.append(ir.MessageStart(self._id, str(chunk.get("modelVersion", ""))))
        if isinstance(chunk.get("usageMetadata"), dict):
            self.usage = usage_from(chunk["usageMetadata"])
        candidates = chunk.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else {}
        if isinstance(candidate, dict):
            content = candidate.get("content") if isinstance(candidate.get("content"), dict) else {}
            assert isinstance(content, dict)
            for raw in content.get("parts") or []:
                out += self._part(raw)
            self._finish = candidate.get("finishReason") or self._finish
        return out

    def close(self) -> list[ir.StreamEvent]:
        if self._ended or self._finish is None:
            return []
        out: list[ir.StreamEvent] = []
        self._close(out)
        self._ended = True
        parts: list[ir.Part] = list(self._calls)
        out.append(ir.MessageEnd(stop_reason(self._finish, parts), self.usage))
        return out

    def _part(self, raw: Any) -> list[ir.StreamEvent]:
        out: list[ir.StreamEvent] = []
        part = parse_part(raw, "part", [], "") if isinstance(raw, dict) else None
        if isinstance(part, ir.Text | ir.Thinking) and part.text:
            kind = "thinking" if isinstance(part, ir.Thinking) else "text"
            if self._open is None or self._open[0] != kind:
                self._close(out)
                self._open = (kind, self._next())
                out.append(ir.BlockStart(self._open[1], kind))  # type: ignore[arg-type]
            index = self._open[1]
            out.append(
                ir.ThinkingDelta(index, part.text)
                if kind == "thinking"
                else ir.TextDelta(index, part.text)
            )
        elif isinstance(part, ir.ToolCall):
            self._close(out)
            if part.id == call_id("", 0):  # no id from Gemini: number it within this response
                part.id = call_id(self._id, len(self._calls))
            self._calls.append(part)
            index = self._next()
            out += [
                ir.BlockStart(
                    index, "tool_call", id=part.id, name=part.name, signature=part.signature
                ),
                ir.ToolArgsDelta(index, part.arguments),
                ir.BlockStop(index),
            ]
        return out

    def _next(self) -> int:
        self._blocks += 1
        return self._blocks - 1

    def _close(self, out: list[ir.StreamEvent]) -> None:
        if self._open is not None:
            out.append(ir.BlockStop(self._open[1]))
            self._open = None
