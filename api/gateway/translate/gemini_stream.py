"""Gemini `streamGenerateContent` chunks ⇄ IR events: `StreamDecoder` reads an upstream's
`alt=sse` stream, `StreamEncoder` writes one for a client of Google's shape (the Gemini
endpoints, `api/gateway/dialects/gemini`).

Decoders: `feed(event)` per upstream SSE event, `close()` once the body ends, `usage` so far
(for metering a stream cut off before its end). Encoders: `feed(ir event) -> bytes`."""

from __future__ import annotations

from typing import Any

import orjson

from api.errors import google_body
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import event_json
from api.gateway.translate.gemini import (
    FINISH_REASONS,
    call_id,
    parse_part,
    render_usage,
    stop_reason,
    usage_from,
)


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


# An error event's (HTTP code, canonical status) per IR error kind, when no gateway error says.
_ERRORS = {
    "overloaded": (503, "UNAVAILABLE"),
    "rate_limit": (429, "RESOURCE_EXHAUSTED"),
    "timeout": (504, "DEADLINE_EXCEEDED"),
    "invalid_request": (400, "INVALID_ARGUMENT"),
}


def error_chunk(error: ir.StreamError) -> dict[str, Any]:
    """An error inside a stream, as Google writes one (and google-genai raises)."""
    if error.error is not None:
        return google_body(error.error)
    code, status = _ERRORS.get(error.kind, (500, "INTERNAL"))
    return {"error": {"code": code, "message": error.message or "The stream failed.",
                      "status": status}}  # fmt: skip


class StreamEncoder:
    """IR events → `streamGenerateContent` chunks: SSE `data:` events (`alt=sse`, CRLF-framed
    as Google frames them), or else the elements of one JSON array, as Google streams without
    `alt=sse`.

    Text and thinking go out as they come, one chunk per delta. A function call goes out
    whole (Gemini has no argument deltas) when its block stops; one whose arguments are not a
    JSON object (cut off by the output cap) is left out. The last chunk carries the
    `finishReason` and the usage; an error is one `{"error": …}` chunk, then the end.
    """

    def __init__(self, *, sse: bool = True, thoughts: bool = True) -> None:
        self._sse = sse
        self._thoughts = thoughts  # Gemini writes thoughts only when asked (`includeThoughts`)
        self._id = ""
        self._model = ""
        self._written = 0
        self._calls: dict[int, tuple[str, list[str], str | None]] = {}
        self._ended = False

    def feed(self, event: ir.StreamEvent) -> bytes:
        if self._ended:
            return b""
        if isinstance(event, ir.MessageStart):
            self._id, self._model = event.id, event.model
        elif isinstance(event, ir.BlockStart) and event.kind == "tool_call":
            self._calls[event.index] = (event.name, [], event.signature)
        elif isinstance(event, ir.ToolArgsDelta) and event.index in self._calls:
            self._calls[event.index][1].append(event.arguments)
        elif isinstance(event, ir.TextDelta) and event.text:
            return self._chunk([{"text": event.text}])
        elif isinstance(event, ir.ThinkingDelta) and event.text and self._thoughts:
            return self._chunk([{"text": event.text, "thought": True}])
        elif isinstance(event, ir.BlockStop) and event.index in self._calls:
            return self._call(*self._calls.pop(event.index))
        elif isinstance(event, ir.MessageEnd):
            finish = FINISH_REASONS.get(event.stop_reason, "STOP")
            last = self._chunk([{"text": ""}], finish, render_usage(event.usage))
            return last + self._end()
        elif isinstance(event, ir.StreamError):
            return self._write(error_chunk(event)) + self._end()
        return b""

    def _call(self, name: str, pieces: list[str], signature: str | None) -> bytes:
        said = "".join(pieces)
        try:
            args = orjson.loads(said) if said.strip() else {}
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(args, dict):
            return b""
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        if signature:
            part["thoughtSignature"] = signature
        return self._chunk([part])

    def _chunk(
        self, parts: list[dict[str, Any]], finish: str | None = None, usage: Any = None
    ) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        chunk: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            chunk["usageMetadata"] = usage
        chunk["modelVersion"] = self._model
        chunk["responseId"] = self._id
        return self._write(chunk)

    def _write(self, chunk: dict[str, Any]) -> bytes:
        data = orjson.dumps(chunk)
        self._written += 1
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        return (b"[" if self._written == 1 else b",\r\n") + data

    def _end(self) -> bytes:
        self._ended = True
        if self._sse:
            return b""
        return b"]" if self._written else b"[]"
