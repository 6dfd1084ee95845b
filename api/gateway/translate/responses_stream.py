"""Responses API streams: named events → IR events (`StreamDecoder`), IR events → the events the
OpenAI SDK reads (`StreamEncoder`): response.created … response.completed (or
response.incomplete), with `sequence_number`s; an error is one `error` event, then
response.failed. The response in the lifecycle events is the whole published object, repeating
the request (`responses.new_envelope`), with one id from the first event to the last, and item
ids that are the same in the item events and the final response.

Decoders: `feed(event)` per upstream SSE event, `close()` once the body ends, `usage` so far
(for metering a stream cut off before its end)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from api.errors import AppError
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import event_json, obj, sse
from api.gateway.translate.responses import (
    finished,
    item_id,
    new_envelope,
    new_response_id,
    stop_reason,
    usage_from,
)


def delta_text(data: bytes) -> str:
    """The text a `response.output_text.delta` event's data carries, as the decoder would
    produce it; "" for what it cannot read."""
    try:
        delta = event_json(data).get("delta")
    except AppError:
        return ""
    return delta if isinstance(delta, str) else ""


class StreamDecoder:
    """Responses events → IR events; usage only arrives with response.completed."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._ended = False
        self._blocks: dict[int, int] = {}  # output_index → IR block index
        self._calls = False

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]:
        if self._ended:
            return []
        data = event_json(event.data)
        kind = str(data.get("type", ""))
        if kind == "response.created":
            response = obj(data.get("response"), "response")
            return [ir.MessageStart(str(response.get("id", "")), str(response.get("model", "")))]
        if kind == "response.output_item.added":
            return self._added(data)
        index = self._blocks.get(data.get("output_index", -1), -1)
        if index < 0:
            return self._terminal(kind, data)
        if kind == "response.output_text.delta":
            return [ir.TextDelta(index, str(data.get("delta", "")))]
        if kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            return [ir.ThinkingDelta(index, text=str(data.get("delta", "")))]
        if kind == "response.function_call_arguments.delta":
            return [ir.ToolArgsDelta(index, str(data.get("delta", "")))]
        if kind == "response.output_item.done":
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            assert isinstance(item, dict)
            signature = item.get("encrypted_content")
            out: list[ir.StreamEvent] = []
            if isinstance(signature, str) and signature:
                out.append(ir.ThinkingDelta(index, signature=signature))
            return [*out, ir.BlockStop(index)]
        return []

    def close(self) -> list[ir.StreamEvent]:
        return []

    def _added(self, data: dict[str, Any]) -> list[ir.StreamEvent]:
        item = obj(data.get("item"), "item")
        kinds: dict[str, ir.BlockKind] = {
            "message": "text",
            "reasoning": "thinking",
            "function_call": "tool_call",
        }
        kind = kinds.get(str(item.get("type")))
        if kind is None:
            return []
        index = self._blocks[data.get("output_index", len(self._blocks))] = len(self._blocks)
        self._calls = self._calls or kind == "tool_call"
        return [
            ir.BlockStart(
                index, kind, id=str(item.get("call_id", "")), name=str(item.get("name", ""))
            )
        ]

    def _terminal(self, kind: str, data: dict[str, Any]) -> list[ir.StreamEvent]:
        if kind in ("response.completed", "response.incomplete"):
            response = obj(data.get("response"), "response")
            self.usage = usage_from(response.get("usage"))
            self._ended = True
            calls: list[ir.Part] = [ir.ToolCall("", "", "")] if self._calls else []
            return [ir.MessageEnd(stop_reason(response, calls), self.usage)]
        if kind in ("response.failed", "error"):
            self._ended = True
            failed = data.get("response") if kind == "response.failed" else None
            if isinstance(failed, dict) and isinstance(failed.get("usage"), dict):
                self.usage = usage_from(failed["usage"])  # what the failed response consumed
            error = failed.get("error") if isinstance(failed, dict) else data
            message = error.get("message") if isinstance(error, dict) else None
            return [ir.StreamError("api_error", str(message or "The response failed."))]
        return []


class StreamEncoder:
    """IR events → Responses events with sequence numbers, ending in response.completed."""

    def __init__(
        self,
        *,
        created: int = 0,
        request: Mapping[str, Any] | None = None,
        response_id: str | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """`request`: the client's body, which the response repeats; `response_id`: a new one
        unless given; `clock`: Unix seconds, for `completed_at` (else `created`)."""
        self._created = created
        self._request = request
        self._clock = clock
        self._sequence = 0
        model = request.get("model") if request is not None else None
        self._envelope: dict[str, Any] = new_envelope(
            response_id or new_response_id(),
            model if isinstance(model, str) else "",
            created,
            request,
        )
        self._items: dict[int, dict[str, Any]] = {}  # IR block index → output item
        self._texts: dict[int, list[str]] = {}
        self._started = False

    def relayed(self, start: ir.MessageStart | None, events: int) -> None:
        """Continue a stream whose first `events` upstream events (`start` among them, if it
        came) were relayed as they came: what this encoder writes next (an error) belongs to
        that response and is numbered after them."""
        self._sequence = events
        if start is not None:
            self._envelope = new_envelope(start.id, start.model, self._created, self._request)
            self._started = True

    def _emit(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(data, kind)

    def feed(self, event: ir.StreamEvent) -> bytes:
        if isinstance(event, ir.MessageStart):
            if event.model:  # the model that answers, as the upstream names it
                self._envelope["model"] = event.model
            return self._begin()
        if isinstance(event, ir.BlockStart):
            return self._start(event)
        item = self._items.get(getattr(event, "index", -1))
        position = self._envelope["output"].index(item) if item is not None else -1
        if isinstance(event, ir.TextDelta) and item is not None:
            self._texts[event.index].append(event.text)
            return self._emit(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        if isinstance(event, ir.ThinkingDelta) and item is not None:
            self._texts[event.index].append(event.text)
            if event.signature:
                item["encrypted_content"] = event.signature
            if not event.text:
                return b""
            return self._emit(
                "response.reasoning_text.delta",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                delta=event.text,
            )
        if isinstance(event, ir.ToolArgsDelta) and item is not None:
            self._texts[event.index].append(event.arguments)
            return self._emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=position,
                delta=event.arguments,
            )
        if isinstance(event, ir.BlockStop) and item is not None:
            return self._stop(event.index)
        if isinstance(event, ir.MessageEnd):
            out = b"".join(self._stop(i) for i in list(self._items))
            now = self._clock() if self._clock is not None else None
            response = finished(self._envelope, event.stop_reason, event.usage, now)
            kind = (
                "response.completed" if response["status"] == "completed" else "response.incomplete"
            )
            return out + self._emit(kind, response=response)
        if isinstance(event, ir.StreamError):
            # As the API ends a failed stream: the response exists first (the SDKs require
            # `response.created` before anything), then `error`, then `response.failed`.
            code = ir.ERROR_KINDS.get(event.kind, ir.ERROR_KINDS["api_error"])[1]
            out = b"" if self._started else self._begin()
            out += self._emit("error", code=code, message=event.message, param=None)
            return out + self.failed(event)
        return b""

    def failed(self, error: ir.StreamError) -> bytes:
        """The `response.failed` event that ends a stream after its `error` event."""
        code = ir.ERROR_KINDS.get(error.kind, ir.ERROR_KINDS["api_error"])[1]
        failed = {
            **self._envelope,
            "status": "failed",
            "error": {"code": code, "message": error.message},
        }
        return self._emit("response.failed", response=failed)

    def _begin(self) -> bytes:
        self._started = True
        return self._emit("response.created", response=self._envelope) + self._emit(
            "response.in_progress", response=self._envelope
        )

    def _start(self, event: ir.BlockStart) -> bytes:
        position = len(self._envelope["output"])
        made = item_id(event.kind, self._envelope["id"], position)
        items: dict[str, dict[str, Any]] = {
            "text": {
                "id": made,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            },
            "thinking": {"id": made, "type": "reasoning", "summary": []},
            "tool_call": {
                "id": made,
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": event.id,
                "name": event.name,
            },
        }
        item = self._items[event.index] = items[event.kind]
        self._texts[event.index] = []
        self._envelope["output"].append(item)
        out = self._emit("response.output_item.added", output_index=position, item=dict(item))
        if event.kind == "text":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            out += self._emit(
                "response.content_part.added",
                item_id=made,
                output_index=position,
                content_index=0,
                part=part,
            )
        return out

    def _stop(self, index: int) -> bytes:
        item = self._items.pop(index, None)
        if item is None:
            return b""
        position = self._envelope["output"].index(item)
        said = "".join(self._texts.pop(index))
        out = b""
        if item["type"] == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": said}
            common = {"item_id": item["id"], "output_index": position, "content_index": 0}
            out += self._emit("response.output_text.done", **common, text=said, logprobs=[])
            out += self._emit("response.content_part.done", **common, part=part)
            item.update(status="completed", content=[part])
        elif item["type"] == "function_call":
            out += self._emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=position,
                name=item["name"],
                arguments=said,
            )
            item.update(status="completed", arguments=said)
        elif said:
            out += self._emit(
                "response.reasoning_text.done",
                item_id=item["id"],
                output_index=position,
                content_index=0,
                text=said,
            )
            item["content"] = [{"type": "reasoning_text", "text": said}]
        return out + self._emit("response.output_item.done", output_index=position, item=item)
