"""Anthropic Messages ⇄ the internal representation.

Reference: https://docs.anthropic.com/en/api/messages (anthropic-version 2023-06-01).
Field table (Messages field → IR; anything not listed, e.g. `metadata`, `top_k`, goes to
`extras`, forwarded only to Anthropic):

- `system` (string or text blocks) → `system`; `cache_control` hints stay within the family
- `role: "system"` messages inside `messages` (mid-conversation instructions, sent with an
  `anthropic-beta` of `mid-conversation-system-…`) → appended to `system` in order, as Chat's
  `system` / `developer` messages are
- `text`, `image` (base64 / url source) blocks → `Text`, `Image`; other block types → 400
- `document` blocks (Claude Code's `Read` of a PDF answers with one in its tool result): a text
  document (`source` text, or content of text blocks) → `Text`; a PDF or file has no place in
  the IR: a line saying it is not shown stands in for it, and a warning names the drop
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
from api.gateway.translate import ir
from api.gateway.translate.fields import (
    arr,
    dumps,
    json_object,
    obj,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    required,
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
STOP_IN: dict[str, ir.StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "tool_use": "tool_use",
    "refusal": "content_filter",
    "pause_turn": "pause",
}
STOP_OUT: dict[str, str] = {
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
}
ERROR_KINDS_IN = {
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
    creation = u.get("cache_creation") if isinstance(u.get("cache_creation"), dict) else {}
    hour = creation.get("ephemeral_1h_input_tokens") if isinstance(creation, dict) else None
    tools = u.get("server_tool_use") if isinstance(u.get("server_tool_use"), dict) else {}
    searches = tools.get("web_search_requests") if isinstance(tools, dict) else None
    return Usage(
        input_tokens=n("input_tokens") + read + write,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
        output_tokens=n("output_tokens"),
        cache_write_1h_input_tokens=min(hour, write) if isinstance(hour, int) and hour > 0 else 0,
        web_search_requests=searches if isinstance(searches, int) and searches > 0 else 0,
    )


def render_usage(usage: Usage) -> dict[str, Any]:
    cached, written = usage.cached_input_tokens, usage.cache_write_input_tokens
    out: dict[str, Any] = {
        "input_tokens": max(usage.input_tokens - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.output_tokens,
    }
    if usage.cache_write_1h_input_tokens:
        hour = usage.cache_write_1h_input_tokens
        out["cache_creation"] = {
            "ephemeral_5m_input_tokens": written - hour,
            "ephemeral_1h_input_tokens": hour,
        }
    if usage.web_search_requests:
        out["server_tool_use"] = {"web_search_requests": usage.web_search_requests}
    return out


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


def _document(block: dict[str, Any], param: str, request: ir.ChatRequest | None) -> list[ir.Text]:
    source = obj(block.get("source"), f"{param}.source")
    if source.get("type") == "text":
        return [ir.Text(text(source.get("data"), f"{param}.source.data"))]
    if source.get("type") == "content":
        blocks = source.get("content")
        if isinstance(blocks, str):
            return [ir.Text(blocks)]
        items = [obj(b, f"{param}.source.content[{i}]") for i, b in enumerate(arr(blocks, param))]
        return [
            ir.Text(text(b.get("text"), f"{param}.source.content[{i}].text"))
            for i, b in enumerate(items)
            if b.get("type") == "text"
        ]
    if source.get("type") not in ("base64", "url", "file"):
        raise InvalidRequest(
            "`source.type` must be text, content, base64, url or file.",
            param=f"{param}.source.type",
        )
    if request is not None:
        ir.warn(request, "documents dropped: only text documents are translated")
    # The model is told, and a turn that held only the document is not left empty.
    title = block.get("title") if isinstance(block.get("title"), str) else "a document"
    return [ir.Text(f"[{title}: not shown, only text documents reach this model]")]


def _result_content(
    value: Any, param: str, request: ir.ChatRequest | None
) -> list[ir.Text | ir.Image]:
    if value is None:
        return []
    if isinstance(value, str):
        return [ir.Text(value)]
    out: list[ir.Text | ir.Image] = []
    for i, raw in enumerate(arr(value, param)):
        block = obj(raw, f"{param}[{i}]")
        if block.get("type") == "image":
            out.append(_image(block, f"{param}[{i}]"))
        elif block.get("type") == "document":
            out += _document(block, f"{param}[{i}]", request)
        else:
            out.append(ir.Text(text(block.get("text"), f"{param}[{i}].text")))
    return out


def _block(block: dict[str, Any], param: str, request: ir.ChatRequest | None = None) -> ir.Part:
    """One content block; `request` collects what is dropped (None: a response's block)."""
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
            content=_result_content(block.get("content"), f"{param}.content", request),
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


def _content(value: Any, param: str, request: ir.ChatRequest) -> list[ir.Part]:
    if isinstance(value, str):
        return [ir.Text(value)]
    parts: list[ir.Part] = []
    for i, raw in enumerate(arr(value, param)):
        block = obj(raw, f"{param}[{i}]")
        if block.get("type") == "document":
            parts += _document(block, f"{param}[{i}]", request)
        else:
            parts.append(_block(block, f"{param}[{i}]", request))
    return parts


def _system(value: Any, param: str = "system") -> list[str]:
    """A string or text blocks (their `cache_control` stays within the family)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [
        text(obj(b, f"{param}[{i}]").get("text"), f"{param}[{i}].text")
        for i, b in enumerate(arr(value, param))
    ]


def _tool_choice(value: Any, request: ir.ChatRequest) -> None:
    if value is None:
        return
    choice = obj(value, "tool_choice")
    kind = choice.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
    if not isinstance(kind, str) or kind not in modes:
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
        if role == "system":  # mid-conversation instructions (Claude Code sends them)
            request.system += _system(message.get("content"), f"messages[{i}].content")
            continue
        if role not in ("user", "assistant"):
            raise InvalidRequest(
                "`role` must be user, assistant or system.", param=f"messages[{i}].role"
            )
        parts = _content(message.get("content"), f"messages[{i}].content", request)
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


def _warn_dropped(request: ir.ChatRequest) -> None:
    if request.reasoning_effort and not request.thinking_budget:
        ir.warn(request, "reasoning_effort dropped")
    if request.output_format:
        ir.warn(request, "structured output dropped: Claude has no JSON mode")


# Anthropic's smallest accepted `thinking.budget_tokens`.
MIN_THINKING_BUDGET = 1024


def render_request(
    request: ir.ChatRequest, *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """`default_max_tokens` fills the required `max_tokens` when the client sent none."""
    _warn_dropped(request)
    messages = []
    # Merged as IR first, so tool results lead their user turn (Anthropic requires it).
    for i, message in enumerate(ir.merge_turns(request.messages)):
        blocks = [b for p in message.parts if (b := _render_part(p, f"messages[{i}]"))]
        if blocks:
            messages.append({"role": message.role, "content": blocks})
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_output_tokens or default_max_tokens,
        "messages": messages,
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
        # Thinking fits inside `max_tokens` (the cap the budget reserved), not the other way.
        budget = min(request.thinking_budget, body["max_tokens"] - 1)
        if budget >= MIN_THINKING_BUDGET:
            body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        else:
            ir.warn(request, "thinking dropped: max_tokens leaves no room for it")
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
        stop_reason=STOP_IN.get(stop, "other") if isinstance(stop, str) else "end_turn",
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
        "stop_reason": STOP_OUT.get(response.stop_reason, "end_turn"),
        "stop_sequence": response.stop_sequence,
        "usage": render_usage(response.usage),
    }
