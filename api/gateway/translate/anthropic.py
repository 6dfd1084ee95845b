"""Anthropic Messages ⇄ the internal representation.

Reference: https://docs.anthropic.com/en/api/messages (anthropic-version 2023-06-01).
Field table (Messages field → IR; anything not listed, e.g. `metadata`, `top_k`, goes to
`extras`, forwarded only to Anthropic):

- `system` (string or text blocks) → `system`; `cache_control` hints stay within the family
- `text`, `image` (base64 / url source) blocks → `Text`, `Image`; other block types → 400
- `tool_use` (`input` object) / `tool_result` → `ToolCall` (arguments as a JSON string) /
  `ToolResult`
- `thinking` (+`signature`), `redacted_thinking` → `Thinking`; unsigned thinking is never sent
  to Anthropic
- `tools[]` with `input_schema` → `Tool`; server tools (`web_search_…`, `bash_…`) → dropped
  with a warning
- `tool_choice` auto / any / tool / none, `disable_parallel_tool_use` → `ToolChoice`,
  `parallel_tool_calls`
- `max_tokens` (required upstream: `default_max_tokens` fills it), `temperature` (0 to 1;
  higher values are clamped), `top_p`, `stop_sequences`, `stream` → same
- `thinking.budget_tokens` → `thinking_budget`
- `stop_reason` end_turn / stop_sequence / max_tokens / tool_use / refusal / pause_turn →
  same / `content_filter` / `pause`
- `usage`: Anthropic's `input_tokens` excludes `cache_read_input_tokens` and
  `cache_creation_input_tokens`; `Usage.input_tokens` is the sum of the three
"""

from __future__ import annotations

from typing import Any

from api.errors import InvalidRequest
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import (
    arr,
    dumps,
    json_object,
    loads,
    obj,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    required,
    sse,
    stop_list,
    text,
)

FAMILY = "anthropic"
DEFAULT_MAX_TOKENS = 4096
_CONSUMED = {
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "thinking",
}
_STOP_IN: dict[str, ir.StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "tool_use": "tool_use",
    "refusal": "content_filter",
    "pause_turn": "pause",
}
_STOP_OUT: dict[str, str] = {
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
}
_ERROR_KINDS = {
    "overloaded_error": "overloaded",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
    "invalid_request_error": "invalid_request",
}


def usage_from(raw: Any) -> Usage:
    """Anthropic counts cache reads and writes outside `input_tokens`; ours include them."""
    u = raw if isinstance(raw, dict) else {}

    def n(key: str) -> int:
        value = u.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    read, write = n("cache_read_input_tokens"), n("cache_creation_input_tokens")
    return Usage(
        input_tokens=n("input_tokens") + read + write,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
        output_tokens=n("output_tokens"),
    )


def render_usage(usage: Usage) -> dict[str, int]:
    cached, written = usage.cached_input_tokens, usage.cache_write_input_tokens
    return {
        "input_tokens": max(usage.input_tokens - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.output_tokens,
    }


# Requests ---------------------------------------------------------------------------------


def _image(block: dict[str, Any], param: str) -> ir.Image:
    source = obj(block.get("source"), f"{param}.source")
    if source.get("type") == "base64":
        return ir.Image(
            media_type=text(source.get("media_type"), f"{param}.source.media_type"),
            data=text(source.get("data"), f"{param}.source.data"),
        )
    if source.get("type") == "url":
        return ir.Image(url=text(source.get("url"), f"{param}.source.url"))
    raise InvalidRequest("Image sources must be base64 or url.", param=f"{param}.source.type")


def _result_content(value: Any, param: str) -> list[ir.Text | ir.Image]:
    if value is None:
        return []
    if isinstance(value, str):
        return [ir.Text(value)]
    out: list[ir.Text | ir.Image] = []
    for i, raw in enumerate(arr(value, param)):
        block = obj(raw, f"{param}[{i}]")
        if block.get("type") == "image":
            out.append(_image(block, f"{param}[{i}]"))
        else:
            out.append(ir.Text(text(block.get("text"), f"{param}[{i}].text")))
    return out


def _block(block: dict[str, Any], param: str) -> ir.Part:
    kind = block.get("type")
    if kind == "text":
        return ir.Text(text(block.get("text"), f"{param}.text"))
    if kind == "image":
        return _image(block, param)
    if kind == "tool_use":
        return ir.ToolCall(
            id=text(block.get("id"), f"{param}.id"),
            name=text(block.get("name"), f"{param}.name"),
            arguments=dumps(obj(block.get("input", {}), f"{param}.input")),
        )
    if kind == "tool_result":
        return ir.ToolResult(
            tool_call_id=text(block.get("tool_use_id"), f"{param}.tool_use_id"),
            content=_result_content(block.get("content"), f"{param}.content"),
            is_error=bool(opt_bool(block, "is_error", f"{param}.is_error")),
        )
    if kind == "thinking":
        return ir.Thinking(
            text(block.get("thinking"), f"{param}.thinking"),
            opt_str(block, "signature", f"{param}.signature"),
        )
    if kind == "redacted_thinking":
        return ir.Thinking("", redacted=text(block.get("data"), f"{param}.data"))
    raise InvalidRequest(
        f"Content blocks of type {kind!r} cannot be translated.", param=f"{param}.type"
    )


def _content(value: Any, param: str) -> list[ir.Part]:
    if isinstance(value, str):
        return [ir.Text(value)]
    return [
        _block(obj(b, f"{param}[{i}]"), f"{param}[{i}]") for i, b in enumerate(arr(value, param))
    ]


def _system(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [
        text(obj(b, f"system[{i}]").get("text"), f"system[{i}].text")
        for i, b in enumerate(arr(value, "system"))
    ]


def _tool_choice(value: Any, request: ir.ChatRequest) -> None:
    if value is None:
        return
    choice = obj(value, "tool_choice")
    kind = choice.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
    if kind not in modes:
        raise InvalidRequest(
            "`tool_choice.type` must be auto, any, tool or none.", param="tool_choice.type"
        )
    name = text(choice.get("name"), "tool_choice.name") if kind == "tool" else None
    request.tool_choice = ir.ToolChoice(modes[kind], name)  # type: ignore[arg-type]  # checked above
    if opt_bool(choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use"):
        request.parallel_tool_calls = False


def _tools(value: Any, request: ir.ChatRequest) -> None:
    for i, raw in enumerate(arr(value, "tools")):
        tool = obj(raw, f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            request.warnings.append(f"tool {tool.get('name') or tool.get('type')!r} dropped")
            continue
        request.tools.append(
            ir.Tool(
                name=text(tool.get("name"), f"tools[{i}].name"),
                description=opt_str(tool, "description", f"tools[{i}].description"),
                parameters=obj(
                    required(tool, "input_schema", f"tools[{i}].input_schema"),
                    f"tools[{i}].input_schema",
                ),
            )
        )


def parse_request(body: dict[str, Any]) -> ir.ChatRequest:
    request = ir.ChatRequest(model=text(required(body, "model", "model"), "model"), messages=[])
    request.system = _system(body.get("system"))
    for i, raw in enumerate(arr(required(body, "messages", "messages"), "messages")):
        message = obj(raw, f"messages[{i}]")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest("`role` must be user or assistant.", param=f"messages[{i}].role")
        parts = _content(message.get("content"), f"messages[{i}].content")
        request.messages.append(ir.Message(role, parts))
    if body.get("tools"):
        _tools(body["tools"], request)
    _tool_choice(body.get("tool_choice"), request)
    request.max_output_tokens = opt_int(body, "max_tokens", "max_tokens")
    request.temperature = opt_float(body, "temperature", "temperature")
    request.top_p = opt_float(body, "top_p", "top_p")
    request.stop = stop_list(body.get("stop_sequences"), "stop_sequences")
    request.stream = bool(opt_bool(body, "stream", "stream"))
    thinking = body.get("thinking")
    if thinking is not None and obj(thinking, "thinking").get("type") == "enabled":
        request.thinking_budget = opt_int(thinking, "budget_tokens", "thinking.budget_tokens")
    request.extras = {k: v for k, v in body.items() if k not in _CONSUMED}
    request.source = FAMILY
    return request


def _render_image(image: ir.Image) -> dict[str, Any]:
    if image.data is not None:
        source = {
            "type": "base64",
            "media_type": image.media_type or "image/png",
            "data": image.data,
        }
    else:
        source = {"type": "url", "url": image.url or ""}
    return {"type": "image", "source": source}


def _render_part(part: ir.Part, param: str) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ir.Image):
        return _render_image(part)
    if isinstance(part, ir.ToolCall):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": json_object(part.arguments, param),
        }
    if isinstance(part, ir.ToolResult):
        content: list[dict[str, Any]] = [
            _render_image(c) if isinstance(c, ir.Image) else {"type": "text", "text": c.text}
            for c in part.content
            if isinstance(c, ir.Image) or c.text
        ]
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": part.tool_call_id,
            "content": content,
        }
        if part.is_error:
            block["is_error"] = True
        return block
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted}
    if part.signature:  # Anthropic rejects thinking it did not sign
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def render_tool_choice(request: ir.ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any] | None = None
    if choice is not None:
        kinds = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}
        out = {"type": kinds[choice.mode]}
        if choice.mode == "tool":
            out["name"] = choice.name
    if request.parallel_tool_calls is False and request.tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def render_request(
    request: ir.ChatRequest, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """`default_max_tokens` fills the required `max_tokens` when the client sent none."""
    messages = []
    for i, message in enumerate(request.messages):
        blocks = [b for p in message.parts if (b := _render_part(p, f"messages[{i}]"))]
        if blocks:
            messages.append(ir.Message(message.role, blocks))  # type: ignore[arg-type]  # blocks
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_output_tokens or default_max_tokens,
        "messages": [{"role": m.role, "content": m.parts} for m in ir.merge_turns(messages)],
    }
    if request.system:
        body["system"] = "\n\n".join(request.system)
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    if (choice := render_tool_choice(request)) is not None:
        body["tool_choice"] = choice
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    optional = {"top_p": request.top_p, "stop_sequences": request.stop or None}
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.thinking_budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": request.thinking_budget}
        body["max_tokens"] = max(body["max_tokens"], request.thinking_budget + 1)
    if request.stream:
        body["stream"] = True
    if request.source == FAMILY:
        body.update({k: v for k, v in request.extras.items() if k not in body})
    return body


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        out["description"] = tool.description
    return out


# Responses --------------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> ir.ChatResponse:
    parts: list[ir.Part] = [
        part
        for i, raw in enumerate(arr(body.get("content", []), "content"))
        if not isinstance(part := _block(obj(raw, f"content[{i}]"), f"content[{i}]"), ir.ToolResult)
    ]
    stop = body.get("stop_reason")
    sequence = body.get("stop_sequence")
    return ir.ChatResponse(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=parts,
        stop_reason=_STOP_IN.get(stop, "other") if isinstance(stop, str) else "end_turn",
        stop_sequence=sequence if isinstance(sequence, str) else None,
        usage=usage_from(body.get("usage")),
    )


def _response_block(part: ir.Part) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ir.ToolCall):
        try:
            arguments = json_object(part.arguments, "arguments")
        except InvalidRequest:  # a model cut off mid-call; the client gets what is parseable
            arguments = {}
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": arguments}
    if isinstance(part, ir.Thinking):
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return None


def render_response(response: ir.ChatResponse) -> dict[str, Any]:
    return {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": [b for p in response.parts if (b := _response_block(p)) is not None],
        "stop_reason": _STOP_OUT.get(response.stop_reason, "end_turn"),
        "stop_sequence": response.stop_sequence,
        "usage": render_usage(response.usage),
    }


# Streams ----------------------------------------------------------------------------------


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
        data = obj(loads(event.data, "event"), "event")
        handler = getattr(self, "_" + str(data.get("type", "")), None)
        return handler(data) if handler is not None else []  # ping and future event types

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
            self._stop = _STOP_IN.get(stop, "other")
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
        kind = _ERROR_KINDS.get(str(error.get("type")), "api_error")
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
                "stop_reason": _STOP_OUT.get(event.stop_reason, "end_turn"),
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
