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
from api.gateway.translate import ir
from api.gateway.translate.fields import (
    arr,
    obj,
    opt_bool,
    opt_float,
    opt_int,
    opt_str,
    required,
    stop_list,
    text,
)
from api.gateway.usage import from_openai

FAMILY = "openai_chat"
_CONSUMED = {
    "model",
    "messages",
    "response_format",
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
FINISH_IN: dict[str, ir.StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
    "insufficient_system_resource": "error",
}


def finish_in(finish: Any, called_tools: bool) -> ir.StopReason:
    """OpenAI answers a call forced by a named `tool_choice` with `finish_reason: "stop"`;
    whatever the reason says, an answer that calls tools stopped to use them."""
    if called_tools and finish in (None, "stop"):
        return "tool_use"
    return FINISH_IN.get(finish, "other") if isinstance(finish, str) else "end_turn"


FINISH_OUT: dict[str, str] = {
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
    request.output_format = parse_response_format(body.get("response_format"))
    request.extras = {k: v for k, v in body.items() if k not in _CONSUMED}
    request.source = FAMILY
    return request


def parse_response_format(value: Any) -> dict[str, Any] | None:
    """Chat's `response_format` as the IR's flat `output_format` (None for plain text)."""
    if value is None:
        return None
    return parse_output_format(obj(value, "response_format"), "response_format", nested=True)


def parse_output_format(
    given: dict[str, Any], param: str, *, nested: bool
) -> dict[str, Any] | None:
    """A structured-output spec: chat nests the schema under `json_schema` (`nested`), the
    Responses API's `text.format` carries it flat."""
    kind = given.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise InvalidRequest(
            f"{param}.type must be text, json_object or json_schema.", param=f"{param}.type"
        )
    where = f"{param}.json_schema" if nested else param
    spec = obj(given.get("json_schema"), where) if nested else given
    out: dict[str, Any] = {
        "type": "json_schema",
        "name": text(spec.get("name"), f"{where}.name"),
        "schema": obj(spec.get("schema", {}), f"{where}.schema"),
    }
    if isinstance(spec.get("strict"), bool):
        out["strict"] = spec["strict"]
    return out


def render_response_format(output_format: dict[str, Any]) -> dict[str, Any]:
    if output_format["type"] != "json_schema":
        return {"type": "json_object"}
    spec = {k: v for k, v in output_format.items() if k != "type"}
    return {"type": "json_schema", "json_schema": spec}


def render_tool_choice(choice: ir.ToolChoice) -> Any:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _render_user(request: ir.ChatRequest, message: ir.Message, out: list[dict[str, Any]]) -> None:
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ir.ToolResult):
            if any(isinstance(c, ir.Image) for c in part.content):
                ir.warn(request, "images in tool results dropped")
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
    if request.thinking_budget:
        ir.warn(request, "thinking budget dropped")
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": "\n\n".join(request.system)})
    for message in ir.merge_turns(request.messages):
        if message.role == "user":
            _render_user(request, message, messages)
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
        "response_format": render_response_format(request.output_format)
        if request.output_format
        else None,
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
        stop_reason=finish_in(finish, any(isinstance(p, ir.ToolCall) for p in parts)),
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
                "finish_reason": FINISH_OUT.get(response.stop_reason, "stop"),
            }
        ],
        "usage": render_usage(response.usage),
    }
