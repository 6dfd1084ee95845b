"""OpenAI Chat Completions (and DeepSeek, same shape) ⇄ the internal representation.

Reference: https://platform.openai.com/docs/api-reference/chat, https://api-docs.deepseek.com/.
Field table (chat field → IR; anything not listed goes to `extras`, forwarded only to a chat
upstream):

- `system` / `developer` messages, anywhere → `system`, folded in order
- `user` content: string, `text`, `image_url` (data: or http URL) → `Text`, `Image`;
  other part types (audio, files) → 400
- `assistant` `content`, `tool_calls[]`, `reasoning_content` (DeepSeek) → `Text`, `ToolCall`,
  `Thinking` (thinking is never sent back upstream)
- `tool` messages → `ToolResult` in a user turn
- `tools[].function` → `Tool`; non-function tools → dropped with a warning
- `tool_choice` auto / none / required / {function:{name}} → `ToolChoice`
- `max_completion_tokens` / `max_tokens`, `temperature`, `top_p`, `stop`, `stream`,
  `parallel_tool_calls`, `reasoning_effort` → same
- `finish_reason` stop / length / tool_calls / content_filter → `end_turn` / `max_tokens` /
  `tool_use` / `content_filter`
- `usage` → `Usage` via `api.gateway.usage.from_openai` (input ⊇ cached, output ⊇ reasoning)
"""

from __future__ import annotations

import re
from typing import Any

from api.errors import InvalidRequest
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import ir
from api.gateway.translate.fields import (
    arr,
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
from api.gateway.usage import from_openai

FAMILY = "openai_chat"
_CONSUMED = {
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "reasoning_effort",
}
_FINISH_IN: dict[str, ir.StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
    "insufficient_system_resource": "error",
}
_FINISH_OUT: dict[str, str] = {
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
}
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


# Requests ---------------------------------------------------------------------------------


def image_from_url(url: str) -> ir.Image:
    match = _DATA_URL.match(url)
    if match:
        return ir.Image(media_type=match.group(1), data=match.group(2))
    return ir.Image(url=url)


def image_to_url(image: ir.Image) -> str:
    if image.data is not None:
        return f"data:{image.media_type or 'image/png'};base64,{image.data}"
    return image.url or ""


def _content_parts(content: Any, param: str) -> list[ir.Text | ir.Image]:
    if isinstance(content, str):
        return [ir.Text(content)] if content else []
    if content is None:
        return []
    out: list[ir.Text | ir.Image] = []
    for i, raw in enumerate(arr(content, param)):
        part = obj(raw, f"{param}[{i}]")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            out.append(ir.Text(text(part.get("text"), f"{param}[{i}].text")))
        elif kind == "image_url":
            image = part.get("image_url")
            url = (
                obj(image, f"{param}[{i}].image_url").get("url")
                if not isinstance(image, str)
                else image
            )
            out.append(image_from_url(text(url, f"{param}[{i}].image_url.url")))
        elif kind == "refusal":
            out.append(ir.Text(text(part.get("refusal"), f"{param}[{i}].refusal")))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} cannot be translated.", param=f"{param}[{i}].type"
            )
    return out


def _text_only(content: Any, param: str) -> str:
    parts = _content_parts(content, param)
    if any(isinstance(p, ir.Image) for p in parts):
        raise InvalidRequest("Only text is allowed here.", param=param)
    return "".join(p.text for p in parts if isinstance(p, ir.Text))


def _tool_calls(raw: Any, param: str) -> list[ir.ToolCall]:
    calls = []
    for i, item in enumerate(arr(raw, param)):
        call = obj(item, f"{param}[{i}]")
        function = obj(call.get("function"), f"{param}[{i}].function")
        arguments = function.get("arguments")
        calls.append(
            ir.ToolCall(
                id=text(call.get("id"), f"{param}[{i}].id"),
                name=text(function.get("name"), f"{param}[{i}].function.name"),
                arguments=text(arguments, f"{param}[{i}].function.arguments")
                if arguments
                else "{}",
            )
        )
    return calls


def _message(raw: dict[str, Any], param: str, request: ir.ChatRequest) -> None:
    role = raw.get("role")
    content = raw.get("content")
    if role in ("system", "developer"):
        request.system.append(_text_only(content, f"{param}.content"))
    elif role == "user":
        request.messages.append(ir.Message("user", [*_content_parts(content, f"{param}.content")]))
    elif role == "assistant":
        parts: list[ir.Part] = []
        reasoning = raw.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append(ir.Thinking(reasoning))
        parts += _content_parts(content, f"{param}.content")
        if raw.get("tool_calls"):
            parts += _tool_calls(raw["tool_calls"], f"{param}.tool_calls")
        request.messages.append(ir.Message("assistant", parts))
    elif role == "tool":
        call_id = text(raw.get("tool_call_id"), f"{param}.tool_call_id")
        result = ir.ToolResult(call_id, [ir.Text(_text_only(content, f"{param}.content"))])
        request.messages.append(ir.Message("user", [result]))
    else:
        raise InvalidRequest(f"Unsupported message role {role!r}.", param=f"{param}.role")


def parse_tool_choice(value: Any, param: str) -> ir.ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ir.ToolChoice(value)
    choice = obj(value, param)
    if choice.get("type") == "function":
        function = obj(choice.get("function"), f"{param}.function")
        return ir.ToolChoice("tool", text(function.get("name"), f"{param}.function.name"))
    raise InvalidRequest("`tool_choice` must be auto, none, required or a function.", param=param)


def _tools(raw: Any, request: ir.ChatRequest) -> None:
    for i, item in enumerate(arr(raw, "tools")):
        tool = obj(item, f"tools[{i}]")
        if tool.get("type") != "function":
            request.warnings.append(f"tool type {tool.get('type')!r} dropped")
            continue
        function = obj(tool.get("function"), f"tools[{i}].function")
        parameters = function.get("parameters")
        request.tools.append(
            ir.Tool(
                name=text(function.get("name"), f"tools[{i}].function.name"),
                description=opt_str(function, "description", f"tools[{i}].function.description"),
                parameters=obj(parameters, f"tools[{i}].function.parameters")
                if parameters is not None
                else {"type": "object", "properties": {}},
                strict=opt_bool(function, "strict", f"tools[{i}].function.strict"),
            )
        )


def parse_request(body: dict[str, Any]) -> ir.ChatRequest:
    request = ir.ChatRequest(model=text(required(body, "model", "model"), "model"), messages=[])
    for i, raw in enumerate(arr(required(body, "messages", "messages"), "messages")):
        _message(obj(raw, f"messages[{i}]"), f"messages[{i}]", request)
    if body.get("tools"):
        _tools(body["tools"], request)
    request.tool_choice = parse_tool_choice(body.get("tool_choice"), "tool_choice")
    request.parallel_tool_calls = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    request.max_output_tokens = opt_int(
        body, "max_completion_tokens", "max_completion_tokens"
    ) or opt_int(body, "max_tokens", "max_tokens")
    request.temperature = opt_float(body, "temperature", "temperature")
    request.top_p = opt_float(body, "top_p", "top_p")
    request.stop = stop_list(body.get("stop"), "stop")
    request.stream = bool(opt_bool(body, "stream", "stream"))
    request.reasoning_effort = opt_str(body, "reasoning_effort", "reasoning_effort")
    request.extras = {k: v for k, v in body.items() if k not in _CONSUMED}
    request.source = FAMILY
    return request


def render_tool_choice(choice: ir.ToolChoice) -> Any:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _render_user(message: ir.Message, out: list[dict[str, Any]]) -> None:
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ir.ToolResult):
            out.append(
                {"role": "tool", "tool_call_id": part.tool_call_id, "content": ir.result_text(part)}
            )
        elif isinstance(part, ir.Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.Image):
            content.append({"type": "image_url", "image_url": {"url": image_to_url(part)}})
    if content:
        simple = all(c["type"] == "text" for c in content)
        out.append(
            {"role": "user", "content": "".join(c["text"] for c in content) if simple else content}
        )


def _render_assistant(message: ir.Message) -> dict[str, Any]:
    said = "".join(p.text for p in message.parts if isinstance(p, ir.Text))
    calls = [p for p in message.parts if isinstance(p, ir.ToolCall)]
    out: dict[str, Any] = {"role": "assistant", "content": said or None}
    if calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return out


def render_request(
    request: ir.ChatRequest, *, max_tokens_field: str = "max_completion_tokens"
) -> dict[str, Any]:
    """`max_tokens_field`: DeepSeek and older compatible hosts read `max_tokens`."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": "\n\n".join(request.system)})
    for message in ir.merge_turns(request.messages):
        if message.role == "user":
            _render_user(message, messages)
        elif any(isinstance(p, ir.Text | ir.ToolCall) for p in message.parts):
            messages.append(_render_assistant(message))  # a turn of bare thinking is dropped
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    if request.tool_choice:
        body["tool_choice"] = render_tool_choice(request.tool_choice)
    optional = {
        "parallel_tool_calls": request.parallel_tool_calls if request.tools else None,
        max_tokens_field: request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop or None,
        "reasoning_effort": request.reasoning_effort,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.source == FAMILY:
        body.update({k: v for k, v in request.extras.items() if k not in body})
    return body


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


# Responses --------------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> ir.ChatResponse:
    choices = arr(body.get("choices"), "choices")
    choice = obj(choices[0], "choices[0]") if choices else {}
    message = obj(choice.get("message", {}), "choices[0].message")
    parts: list[ir.Part] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        parts.append(ir.Thinking(reasoning))
    for key in ("content", "refusal"):
        if isinstance(message.get(key), str) and message[key]:
            parts.append(ir.Text(message[key]))
    if message.get("tool_calls"):
        parts += _tool_calls(message["tool_calls"], "choices[0].message.tool_calls")
    finish = choice.get("finish_reason")
    usage = body.get("usage")
    return ir.ChatResponse(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=parts,
        stop_reason=_FINISH_IN.get(finish, "other") if isinstance(finish, str) else "end_turn",
        usage=from_openai(usage) if isinstance(usage, dict) else Usage(),
        created=body["created"] if isinstance(body.get("created"), int) else 0,
    )


def render_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_input_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def render_response(response: ir.ChatResponse) -> dict[str, Any]:
    message = _render_assistant(ir.Message("assistant", response.parts))
    message["refusal"] = None
    thinking = "".join(p.text for p in response.parts if isinstance(p, ir.Thinking))
    if thinking:
        message["reasoning_content"] = thinking  # DeepSeek's field; the OpenAI SDK keeps extras
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH_OUT.get(response.stop_reason, "stop"),
            }
        ],
        "usage": render_usage(response.usage),
    }


# Streams ----------------------------------------------------------------------------------


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
        chunk = obj(loads(event.data, "chunk"), "chunk")
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
        for key, kind in (("reasoning_content", "thinking"), ("content", "text")):
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
        finish = self._finish or "stop"
        out.append(ir.MessageEnd(_FINISH_IN.get(finish, "other"), self.usage))
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
            out = self._chunk({}, _FINISH_OUT.get(event.stop_reason, "stop"))
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
