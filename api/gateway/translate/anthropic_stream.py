"""Anthropic Messages streams: upstream events → IR events (`StreamDecoder`), IR events → the
events the Anthropic SDK reads (`StreamEncoder`): message_start, content_block_start/delta/stop,
message_delta, message_stop, or `event: error`. Pings are skipped.

Decoders: `feed(event)` per upstream SSE event, `close()` once the body ends, `usage` so far
(for metering a stream cut off before its end)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.errors import AppError
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.anthropic import (
    ERROR_KINDS_IN,
    STOP_IN,
    STOP_OUT,
    render_usage,
    usage_from,
)
from api.gateway.translate.fields import dumps, event_json, obj, sse

_HANDLED = {
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "error",
}  # fmt: skip


def delta_text(data: bytes) -> str:
    """The text a `content_block_delta` event's data carries (text, thinking or tool input),
    as the decoder would produce it; "" for what it cannot read."""
    try:
        delta = event_json(data).get("delta")
    except AppError:
        return ""
    if not isinstance(delta, dict):
        return ""
    kind = delta.get("type")
    field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
    name = field.get(kind) if isinstance(kind, str) else None
    return str(delta.get(name) or "") if name is not None else ""


class StreamDecoder:
    """Anthropic events → IR events. Usage: input on message_start, output on message_delta."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._ended = False
        self._stop: ir.StopReason = "end_turn"
        self._sequence: str | None = None
        self._blocks: dict[int, int] = {}  # Anthropic index → IR block index
        self._open: set[int] = set()

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]:
        if self._ended:
            return []
        data = event_json(event.data)
        kind = data.get("type")
        if kind not in _HANDLED:
            return []  # ping, and event types added after this was written
        handler: Callable[[dict[str, Any]], list[ir.StreamEvent]] = getattr(self, f"_{kind}")
        return handler(data)

    def close(self) -> list[ir.StreamEvent]:
        return []  # a stream without message_stop was cut off; the caller has usage so far

    def _message_start(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        message = obj(data.get("message"), "message")
        self.usage = usage_from(message.get("usage"))
        return [
            ir.MessageStart(str(message.get("id", "")), str(message.get("model", "")), self.usage)
        ]

    def _content_block_start(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        block = obj(data.get("content_block"), "content_block")
        kinds: dict[str, ir.BlockKind] = {
            "text": "text",
            "thinking": "thinking",
            "redacted_thinking": "thinking",
            "tool_use": "tool_call",
        }
        kind = kinds.get(str(block.get("type")))
        if kind is None:  # server tool blocks have no place in other dialects
            return []
        index = self._blocks[data.get("index", 0)] = len(self._blocks)
        self._open.add(index)
        out: list[ir.StreamEvent] = [
            ir.BlockStart(index, kind, id=str(block.get("id", "")), name=str(block.get("name", "")))
        ]
        if kind == "text" and block.get("text"):
            out.append(ir.TextDelta(index, str(block["text"])))
        if kind == "tool_call" and block.get("input"):
            out.append(ir.ToolArgsDelta(index, dumps(block["input"])))
        return out

    def _content_block_delta(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        index = self._blocks.get(data.get("index", -1))
        delta = data.get("delta")
        if index is None or not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta":
            return [ir.TextDelta(index, str(delta.get("text", "")))]
        if kind == "thinking_delta":
            return [ir.ThinkingDelta(index, text=str(delta.get("thinking", "")))]
        if kind == "signature_delta":
            return [ir.ThinkingDelta(index, signature=str(delta.get("signature", "")))]
        if kind == "input_json_delta" and delta.get("partial_json"):
            return [ir.ToolArgsDelta(index, str(delta["partial_json"]))]
        return []

    def _content_block_stop(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        index = self._blocks.get(data.get("index", -1))
        if index is None or index not in self._open:
            return []
        self._open.discard(index)
        return [ir.BlockStop(index)]

    def _message_delta(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
        assert isinstance(delta, dict)
        stop = delta.get("stop_reason")
        if isinstance(stop, str):
            self._stop = STOP_IN.get(stop, "other")
        if isinstance(delta.get("stop_sequence"), str):
            self._sequence = delta["stop_sequence"]
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        # Newer servers repeat the cumulative input counts here; older ones send output only.
        start = render_usage(self.usage)
        self.usage = usage_from({**start, **{k: v for k, v in usage.items() if v is not None}})
        return []

    def _message_stop(self, _data: dict[str, Any]) -> list[ir.StreamEvent]:
        # A max_tokens stop mid tool call skips content_block_stop (SDK fixture).
        out: list[ir.StreamEvent] = [ir.BlockStop(i) for i in sorted(self._open)]
        self._open.clear()
        self._ended = True
        return [*out, ir.MessageEnd(self._stop, self.usage, self._sequence)]

    def _error(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        assert isinstance(error, dict)
        self._ended = True
        kind = ERROR_KINDS_IN.get(str(error.get("type")), "api_error")
        return [ir.StreamError(kind, str(error.get("message", "")))]


class StreamEncoder:
    """IR events → Anthropic events, message_start … message_stop, or `event: error`."""

    def __init__(self) -> None:
        self._blocks: dict[int, int] = {}  # IR block index → Anthropic index
        self._open: set[int] = set()

    def feed(self, event: ir.StreamEvent) -> bytes:
        if isinstance(event, ir.MessageStart):
            message: dict[str, Any] = {
                "id": event.id,
                "type": "message",
                "role": "assistant",
                "model": event.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": render_usage(event.usage or Usage()),
            }
            return sse({"type": "message_start", "message": message}, "message_start")
        if isinstance(event, ir.BlockStart):
            index = self._blocks[event.index] = len(self._blocks)
            self._open.add(index)
            blocks: dict[str, dict[str, Any]] = {
                "text": {"type": "text", "text": ""},
                "thinking": {"type": "thinking", "thinking": "", "signature": ""},
                "tool_call": {"type": "tool_use", "id": event.id, "name": event.name, "input": {}},
            }
            data = {
                "type": "content_block_start",
                "index": index,
                "content_block": blocks[event.kind],
            }
            return sse(data, "content_block_start")
        if isinstance(event, ir.TextDelta):
            return self._delta(event.index, {"type": "text_delta", "text": event.text})
        if isinstance(event, ir.ThinkingDelta):
            out = b""
            if event.text:
                out += self._delta(event.index, {"type": "thinking_delta", "thinking": event.text})
            if event.signature:
                out += self._delta(
                    event.index, {"type": "signature_delta", "signature": event.signature}
                )
            return out
        if isinstance(event, ir.ToolArgsDelta):
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            return self._delta(event.index, delta)
        if isinstance(event, ir.BlockStop):
            return self._stop(self._blocks.get(event.index, -1))
        if isinstance(event, ir.MessageEnd):
            out = b"".join(self._stop(i) for i in sorted(self._open))
            stop: dict[str, Any] = {
                "stop_reason": STOP_OUT.get(event.stop_reason, "end_turn"),
                "stop_sequence": event.stop_sequence,
            }
            data = {"type": "message_delta", "delta": stop, "usage": render_usage(event.usage)}
            out += sse(data, "message_delta")
            return out + sse({"type": "message_stop"}, "message_stop")
        if isinstance(event, ir.StreamError):
            kind = ir.ERROR_KINDS.get(event.kind, ir.ERROR_KINDS["api_error"])[0]
            error = {"type": "error", "error": {"type": kind, "message": event.message}}
            return sse(error, "error")
        return b""

    def _delta(self, block: int, delta: dict[str, Any]) -> bytes:
        index = self._blocks.get(block)
        if index is None:
            return b""
        return sse(
            {"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"
        )

    def _stop(self, index: int) -> bytes:
        if index not in self._open:
            return b""
        self._open.discard(index)
        return sse({"type": "content_block_stop", "index": index}, "content_block_stop")
