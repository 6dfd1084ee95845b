"""OpenAI Responses API ⇄ the internal representation.

Reference: https://platform.openai.com/docs/api-reference/responses.
Used for models of other providers (an OpenAI model gets the client's body itself, see
`api/gateway/dialects/responses/routes.py`). Field table (Responses field → IR; anything not
listed, e.g. `store`, `metadata`, `include`, goes to `extras`, which no other dialect takes):

- `instructions`, `system` / `developer` input messages → `system`
- `input` string or items: messages (`input_text`, `output_text`, `input_image`),
  `function_call` (`call_id`), `function_call_output`, `reasoning` → `Text`, `Image`,
  `ToolCall`, `ToolResult`, `Thinking` (a reasoning item's `encrypted_content` carries the
  thinking signature); other item types → 400
- flat `tools[]` of type function → `Tool`; built-in tools (`web_search`, …) → dropped with a
  warning
- `tool_choice` auto / none / required / {type:function,name} → `ToolChoice`
- `max_output_tokens`, `temperature`, `top_p`, `stream`, `parallel_tool_calls`,
  `reasoning.effort` → same
- `previous_response_id`, `conversation` → resolved into `input` from the store before
  translation (`api/response`); in a body that reaches the translator → 400
- `status` completed (with function_call items) / incomplete `max_output_tokens` /
  `content_filter` → `end_turn` (`tool_use`) / `max_tokens` / `content_filter`
- `usage.input_tokens` (⊇ cached), `output_tokens` (⊇ reasoning) → `Usage`

The response object Tollgate renders has every field of the published one (the Open Responses
`ResponseResource`, openai-python's `Response`), in OpenAI's order. It repeats the request as
OpenAI does: `instructions`, `max_output_tokens`, `max_tool_calls`, `parallel_tool_calls`
(default true), `previous_response_id`, `prompt_cache_key`, `reasoning` (`effort`, `summary`,
null when not asked), `safety_identifier`, `store` (default true), `temperature` and `top_p`
(default 1.0), `text` (`format` default `{"type": "text"}`, `verbosity` default medium),
`tool_choice` (default auto), `tools` (the function tools offered, `strict` default true; the
dropped built-in ones are not offered to the model, so not listed), `top_logprobs` (default 0),
`truncation` (default disabled), `user`, `metadata` (default {}), and `conversation` (`{"id"}`)
when it names one. Fields the request cannot set are what served it: `background` false,
`service_tier` default, `presence_penalty` and `frequency_penalty` 0.0; `completed_at` is set
once the response completed. Ids: the response `resp_` and 48 hex digits, its output items
`msg_` (message), `fc_` (function call) and `rs_` (reasoning) followed by the response's digits
and the item's position, so an item id is unique across responses and the same in a stream's
events and its final response.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
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
    text,
)
from api.gateway.translate.openai_chat import image_from_url, image_to_url, parse_output_format

FAMILY = "responses"
_CONSUMED = {
    "model",
    "text",
    "instructions",
    "input",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "reasoning",
}
_STATELESS = ("previous_response_id", "conversation")


def usage_from(raw: Any) -> Usage:
    u = raw if isinstance(raw, dict) else {}
    details_in = u.get("input_tokens_details") or {}
    details_out = u.get("output_tokens_details") or {}

    def n(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        return value if isinstance(value, int) and value > 0 else 0

    return Usage(
        input_tokens=n(u, "input_tokens"),
        cached_input_tokens=n(details_in, "cached_tokens"),
        output_tokens=n(u, "output_tokens"),
        reasoning_tokens=n(details_out, "reasoning_tokens"),
    )


def render_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


# Requests ---------------------------------------------------------------------------------


def _content(value: Any, param: str) -> list[ir.Text | ir.Image]:
    if isinstance(value, str):
        return [ir.Text(value)]
    out: list[ir.Text | ir.Image] = []
    for i, raw in enumerate(arr(value, param)):
        part = obj(raw, f"{param}[{i}]")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            out.append(ir.Text(text(part.get("text"), f"{param}[{i}].text")))
        elif kind == "refusal":
            out.append(ir.Text(text(part.get("refusal"), f"{param}[{i}].refusal")))
        elif kind == "input_image":
            out.append(image_from_url(text(part.get("image_url"), f"{param}[{i}].image_url")))
        else:
            raise InvalidRequest(
                f"Content parts of type {kind!r} cannot be translated.", param=f"{param}[{i}].type"
            )
    return out


def _reasoning(item: dict[str, Any], param: str) -> ir.Thinking:
    content = arr(item.get("content") or [], f"{param}.content")
    pieces = [obj(p, f"{param}.content").get("text") for p in content]
    if not pieces:
        summary = arr(item.get("summary") or [], f"{param}.summary")
        pieces = [obj(p, f"{param}.summary").get("text") for p in summary]
    said = "".join(p for p in pieces if isinstance(p, str))
    return ir.Thinking(said, opt_str(item, "encrypted_content", f"{param}.encrypted_content"))


def _item(item: dict[str, Any], param: str, request: ir.ChatRequest) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        parts = _content(item.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            request.system.append("".join(p.text for p in parts if isinstance(p, ir.Text)))
        elif role in ("user", "assistant"):
            request.messages.append(ir.Message(role, [*parts]))
        else:
            raise InvalidRequest(f"Unsupported role {role!r}.", param=f"{param}.role")
    elif kind == "function_call":
        call = ir.ToolCall(
            id=text(item.get("call_id"), f"{param}.call_id"),
            name=text(item.get("name"), f"{param}.name"),
            arguments=text(item.get("arguments"), f"{param}.arguments"),
        )
        request.messages.append(ir.Message("assistant", [call]))
    elif kind == "function_call_output":
        output = item.get("output")
        content: list[ir.Text | ir.Image] = (
            [ir.Text(output)] if isinstance(output, str) else _content(output, f"{param}.output")
        )
        call_id = text(item.get("call_id"), f"{param}.call_id")
        request.messages.append(ir.Message("user", [ir.ToolResult(call_id, content)]))
    elif kind == "reasoning":
        request.messages.append(ir.Message("assistant", [_reasoning(item, param)]))
    else:
        raise InvalidRequest(
            f"Input items of type {kind!r} cannot be translated.", param=f"{param}.type"
        )


def _tool_choice(value: Any) -> ir.ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ir.ToolChoice(value)
    choice = obj(value, "tool_choice")
    if choice.get("type") == "function":
        return ir.ToolChoice("tool", text(choice.get("name"), "tool_choice.name"))
    raise InvalidRequest(
        "`tool_choice` must be auto, none, required or a function.", param="tool_choice"
    )


def _tools(value: Any, request: ir.ChatRequest) -> None:
    for i, raw in enumerate(arr(value, "tools")):
        tool = obj(raw, f"tools[{i}]")
        if tool.get("type") != "function":
            request.warnings.append(f"tool type {tool.get('type')!r} dropped")
            continue
        parameters = tool.get("parameters")
        request.tools.append(
            ir.Tool(
                name=text(tool.get("name"), f"tools[{i}].name"),
                description=opt_str(tool, "description", f"tools[{i}].description"),
                parameters=obj(parameters, f"tools[{i}].parameters")
                if parameters is not None
                else {"type": "object", "properties": {}},
                strict=opt_bool(tool, "strict", f"tools[{i}].strict"),
            )
        )


def _text_format(given: dict[str, Any]) -> dict[str, Any] | None:
    """`text.format` (what `client.responses.parse(text_format=…)` sends) for the IR."""
    if given.get("format") is None:
        return None
    return parse_output_format(obj(given["format"], "text.format"), "text.format", nested=False)


def parse_request(body: dict[str, Any]) -> ir.ChatRequest:
    for name in _STATELESS:
        if body.get(name) is not None:
            raise InvalidRequest(
                f"`{name}` is not supported: send the whole conversation in `input`.", param=name
            )
    request = ir.ChatRequest(model=text(required(body, "model", "model"), "model"), messages=[])
    if (instructions := opt_str(body, "instructions", "instructions")) is not None:
        request.system.append(instructions)
    given = required(body, "input", "input")
    if isinstance(given, str):
        request.messages.append(ir.Message("user", [ir.Text(given)]))
    else:
        for i, raw in enumerate(arr(given, "input")):
            _item(obj(raw, f"input[{i}]"), f"input[{i}]", request)
    if body.get("tools"):
        _tools(body["tools"], request)
    request.tool_choice = _tool_choice(body.get("tool_choice"))
    request.parallel_tool_calls = opt_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    request.max_output_tokens = opt_int(body, "max_output_tokens", "max_output_tokens")
    request.temperature = opt_float(body, "temperature", "temperature")
    request.top_p = opt_float(body, "top_p", "top_p")
    request.stream = bool(opt_bool(body, "stream", "stream"))
    if body.get("reasoning") is not None:
        reasoning = obj(body["reasoning"], "reasoning")
        request.reasoning_effort = opt_str(reasoning, "effort", "reasoning.effort")
    if body.get("text") is not None:
        request.output_format = _text_format(obj(body["text"], "text"))
    request.extras = {k: v for k, v in body.items() if k not in _CONSUMED}
    request.source = FAMILY
    return request


def _render_items(message: ir.Message) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    text_kind = "input_text" if message.role == "user" else "output_text"
    for part in message.parts:
        if isinstance(part, ir.Text):
            content.append({"type": text_kind, "text": part.text})
        elif isinstance(part, ir.Image):
            content.append({"type": "input_image", "image_url": image_to_url(part)})
        elif isinstance(part, ir.ToolCall):
            items.append(
                {
                    "type": "function_call",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments,
                }
            )
        elif isinstance(part, ir.ToolResult):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": part.tool_call_id,
                    "output": ir.result_text(part),
                }
            )
    if content:
        items.insert(0, {"type": "message", "role": message.role, "content": content})
    return items


def render_request(request: ir.ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "input": [item for m in request.messages for item in _render_items(m)],
    }
    if request.system:
        body["instructions"] = "\n\n".join(request.system)
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": bool(t.strict),
            }
            for t in request.tools
        ]
    if request.tool_choice:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "name": choice.name} if choice.mode == "tool" else choice.mode
        )
    optional = {
        "parallel_tool_calls": request.parallel_tool_calls,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "reasoning": {"effort": request.reasoning_effort} if request.reasoning_effort else None,
        "stream": True if request.stream else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.source == FAMILY:
        body.update({k: v for k, v in request.extras.items() if k not in body})
    return body


# Responses --------------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> ir.ChatResponse:
    parts: list[ir.Part] = []
    for i, raw in enumerate(arr(body.get("output", []), "output")):
        item = obj(raw, f"output[{i}]")
        if item.get("type") == "message":
            parts += _content(item.get("content", []), f"output[{i}].content")
        elif item.get("type") == "function_call":
            parts.append(
                ir.ToolCall(
                    id=text(item.get("call_id"), f"output[{i}].call_id"),
                    name=text(item.get("name"), f"output[{i}].name"),
                    arguments=text(item.get("arguments", ""), f"output[{i}].arguments"),
                )
            )
        elif item.get("type") == "reasoning":
            parts.append(_reasoning(item, f"output[{i}]"))
    return ir.ChatResponse(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        parts=parts,
        stop_reason=stop_reason(body, parts),
        usage=usage_from(body.get("usage")),
        created=body["created_at"] if isinstance(body.get("created_at"), int) else 0,
    )


def stop_reason(body: dict[str, Any], parts: list[ir.Part]) -> ir.StopReason:
    if body.get("status") == "incomplete":
        details = body.get("incomplete_details") or {}
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "max_tokens"
    if body.get("status") == "failed":
        return "error"
    return "tool_use" if any(isinstance(p, ir.ToolCall) for p in parts) else "end_turn"


def _output_item(part: ir.Part, item_id: str) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": part.text}
            ],
        }
    if isinstance(part, ir.ToolCall):
        return {
            "id": item_id,
            "type": "function_call",
            "status": "completed",
            "arguments": part.arguments,
            "call_id": part.id,
            "name": part.name,
        }
    if isinstance(part, ir.Thinking):
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        if part.text:
            item["content"] = [{"type": "reasoning_text", "text": part.text}]
        if part.signature:
            item["encrypted_content"] = part.signature
        return item
    return None


# The response object ----------------------------------------------------------------------

_ITEM_PREFIXES: dict[str, str] = {"text": "msg", "tool_call": "fc", "thinking": "rs"}
_PART_KINDS: dict[type, ir.BlockKind] = {
    ir.Text: "text",
    ir.ToolCall: "tool_call",
    ir.Thinking: "thinking",
}
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
_SUMMARIES = frozenset({"auto", "concise", "detailed"})
_VERBOSITIES = frozenset({"low", "medium", "high"})


def new_response_id() -> str:
    """A response id as OpenAI writes them: `resp_` and 48 hex digits."""
    return f"resp_{secrets.token_hex(24)}"


def item_id(kind: ir.BlockKind, response_id: str, position: int) -> str:
    """The id of the output item at `position`: its kind's prefix, the response's digits and
    the position (unique within the response, and across responses as theirs are)."""
    digits = response_id.partition("_")[2] or response_id
    return f"{_ITEM_PREFIXES[kind]}_{digits}{position:04x}"


def _string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _integer(body: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    value = body.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    return value if isinstance(value, bool) else default


def _echo_tools(given: Any) -> list[dict[str, Any]]:
    """The function tools offered, in the shape the API repeats them."""
    tools: list[dict[str, Any]] = []
    for tool in given if isinstance(given, list) else ():
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue
        name = tool.get("name")
        if not isinstance(name, str):
            continue
        parameters = tool.get("parameters")
        tools.append(
            {
                "type": "function",
                "name": name,
                "description": _string(tool, "description"),
                "parameters": parameters if isinstance(parameters, dict) else None,
                "strict": _flag(tool, "strict", True),
            }
        )
    return tools


def _echo_tool_choice(given: Any) -> str | dict[str, Any]:
    if given in ("auto", "none", "required"):
        return str(given)
    if isinstance(given, dict) and given.get("type") == "function":
        name = given.get("name")
        if isinstance(name, str):
            return {"type": "function", "name": name}
    return "auto"


def _echo_text(given: Any) -> dict[str, Any]:
    config = given if isinstance(given, dict) else {}
    asked = config.get("format")
    form: dict[str, Any] = {"type": "text"}
    if isinstance(asked, dict) and asked.get("type") == "json_object":
        form = {"type": "json_object"}
    elif isinstance(asked, dict) and asked.get("type") == "json_schema":
        form = {
            "type": "json_schema",
            "description": _string(asked, "description"),
            "name": _string(asked, "name") or "",
            "schema": asked.get("schema") if isinstance(asked.get("schema"), dict) else {},
            "strict": _flag(asked, "strict", False),
        }
    verbosity = config.get("verbosity")
    return {"format": form, "verbosity": verbosity if verbosity in _VERBOSITIES else "medium"}


def _echo_reasoning(given: Any) -> dict[str, Any]:
    config = given if isinstance(given, dict) else {}
    effort, summary = config.get("effort"), config.get("summary")
    return {
        "effort": effort if effort in _EFFORTS else None,
        "summary": summary if summary in _SUMMARIES else None,
    }


def new_envelope(
    response_id: str, model: str, created: int, request: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The response object before its output, repeating `request` (the client's body) as the
    API does; OpenAI's defaults for what it leaves out (see the module docstring)."""
    body: Mapping[str, Any] = request or {}
    truncation = body.get("truncation")
    metadata = body.get("metadata")
    envelope = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "completed_at": None,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": None,
        "instructions": _string(body, "instructions"),
        "max_output_tokens": _integer(body, "max_output_tokens"),
        "max_tool_calls": _integer(body, "max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": _flag(body, "parallel_tool_calls", True),
        "presence_penalty": 0.0,
        "previous_response_id": _string(body, "previous_response_id"),
        "prompt_cache_key": _string(body, "prompt_cache_key"),
        "reasoning": _echo_reasoning(body.get("reasoning")),
        "safety_identifier": _string(body, "safety_identifier"),
        "service_tier": "default",
        "store": _flag(body, "store", True),
        "temperature": _number(body, "temperature", 1.0),
        "text": _echo_text(body.get("text")),
        "tool_choice": _echo_tool_choice(body.get("tool_choice")),
        "tools": _echo_tools(body.get("tools")),
        "top_logprobs": _integer(body, "top_logprobs", 0),
        "top_p": _number(body, "top_p", 1.0),
        "truncation": truncation if truncation in ("auto", "disabled") else "disabled",
        "usage": None,
        "user": _string(body, "user"),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }
    conversation = body.get("conversation")  # an id, or {"id": …}
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if isinstance(conversation, str) and conversation:
        envelope["conversation"] = {"id": conversation}
    return envelope


def finished(
    envelope: dict[str, Any], stop: ir.StopReason, usage: Usage, completed_at: int | None = None
) -> dict[str, Any]:
    """`envelope` as it ends: its status, usage, and when it completed (`completed_at`, or its
    creation time when the caller keeps no clock)."""
    incomplete = {"max_tokens": "max_output_tokens", "content_filter": "content_filter"}
    if stop in incomplete:
        envelope["status"] = "incomplete"
        envelope["incomplete_details"] = {"reason": incomplete[stop]}
    else:
        envelope["status"] = "completed"
        envelope["completed_at"] = envelope["created_at"] if completed_at is None else completed_at
    envelope["usage"] = render_usage(usage)
    return envelope


def render_response(
    response: ir.ChatResponse,
    request: Mapping[str, Any] | None = None,
    *,
    response_id: str | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The response object for `response`, repeating `request` (the client's body); a new id
    unless `response_id` is given."""
    envelope = new_envelope(
        response_id or new_response_id(), response.model, response.created, request
    )
    merged: list[ir.Part] = []
    for part in response.parts:  # adjacent text parts are one message item
        if merged and isinstance(part, ir.Text) and isinstance(merged[-1], ir.Text):
            merged[-1] = ir.Text(merged[-1].text + part.text)
        else:
            merged.append(part)
    output: list[dict[str, Any]] = envelope["output"]
    for part in merged:
        kind = _PART_KINDS.get(type(part))
        if kind is None:
            continue
        item = _output_item(part, item_id(kind, envelope["id"], len(output)))
        if item is not None:
            output.append(item)
    return finished(envelope, response.stop_reason, response.usage, completed_at)
