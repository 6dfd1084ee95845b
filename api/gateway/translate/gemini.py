"""Google Gemini `generateContent` (v1beta) ⇄ the internal representation.

Reference: https://ai.google.dev/api/generate-content (REST, camelCase fields). The model is
part of the URL (`request_path`), not the body. Field table (Gemini field → IR; anything not
listed, e.g. `safetySettings`, `cachedContent`, goes to `extras`, forwarded only to Gemini):

- `systemInstruction.parts[].text` → `system`
- `contents[]` role user / model with `text`, `inlineData`, `fileData` parts → `Message` with
  `Text`, `Image`; consecutive turns of one role are merged
- `functionCall{name,args}` (+`thoughtSignature`) → `ToolCall`; Gemini sends no call id, so one
  is made from `responseId` and the call's position. Clients of other families never see the
  signature; Gemini 3 gets Google's placeholder for calls that come back without one
- `functionResponse{name,response}` → `ToolResult`; Gemini answers by *name*, taken from the
  call with that id; the result goes in `response.result` unless it is a JSON object
- `text` with `thought: true` → `Thinking`; thinking is never sent back to Gemini
- `tools[].functionDeclarations[]` → `Tool`: `parametersJsonSchema` as given, or `parameters`
  (Gemini's Schema) with its types in lower case; schemas sent to Gemini are cut to its subset
  (`clean_schema`)
- field names in snake_case (proto names, which Google's JSON takes and google-genai sends in
  places) → lowerCamelCase first (`gemini_fields.canonical`), client data and schemas left
  alone
- `toolConfig.functionCallingConfig` AUTO / ANY / NONE / ANY + `allowedFunctionNames` →
  auto / required / none / tool
- `generationConfig` `maxOutputTokens`, `temperature`, `topP`, `stopSequences`,
  `thinkingConfig.thinkingBudget` → same (-1, dynamic thinking, is the target's default)
- `generationConfig.responseMimeType` `application/json` → JSON mode; with
  `responseJsonSchema` (JSON Schema) or `responseSchema` (Gemini's subset, upper-case types
  allowed) → a JSON schema named `response`
- `finishReason` STOP (with calls) / MAX_TOKENS / SAFETY, RECITATION, … → `end_turn`
  (`tool_use`) / `max_tokens` / `content_filter`
- `usageMetadata` → `Usage`: output = `candidatesTokenCount` + `thoughtsTokenCount` (Gemini's
  candidates count excludes thinking)
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from api.errors import InvalidRequest
from api.gateway.pricing import Usage
from api.gateway.translate import ir
from api.gateway.translate.fields import (
    arr,
    dumps,
    json_object,
    obj,
    opt_float,
    opt_int,
    opt_str,
    text,
)
from api.gateway.translate.gemini_fields import lower_types, output_format

FAMILY = "gemini"
_CONSUMED = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}
_FILTERED = (
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "LANGUAGE",
)
# IR stop reason → `finishReason` (anything else is STOP).
FINISH_REASONS = {"max_tokens": "MAX_TOKENS", "content_filter": "SAFETY", "other": "OTHER"}
_MODES_IN = {"AUTO": "auto", "ANY": "required", "NONE": "none", "VALIDATED": "auto"}
_MODES_OUT = {"auto": "AUTO", "required": "ANY", "none": "NONE", "tool": "ANY"}
# The OpenAPI 3.0 subset Gemini's Schema accepts; anything else (additionalProperties, $schema,
# $ref/$defs, strict, const, oneOf, …) is rejected with 400 INVALID_ARGUMENT.
_SCHEMA_KEYS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
_MAX_SCHEMA_DEPTH = 16
# Models that require the thought signature of each function-calling step sent back, and the
# placeholder Google accepts for calls from a history the model did not produce
# (https://ai.google.dev/gemini-api/docs/thought-signatures).
_SIGNED_CALLS = ("gemini-3",)
_PLACEHOLDER_SIGNATURE = "skip_thought_signature_validator"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def request_path(model: str, *, stream: bool) -> str:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{action}"


def call_id(response_id: str, position: int) -> str:
    """A stable id for a function call (Gemini's Developer API sends none)."""
    return _UNSAFE_ID.sub("_", f"call_{response_id}_{position}")


def usage_from(raw: Any) -> Usage:
    u = raw if isinstance(raw, dict) else {}

    def n(key: str) -> int:
        value = u.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    thoughts = n("thoughtsTokenCount")
    return Usage(
        input_tokens=n("promptTokenCount") + n("toolUsePromptTokenCount"),
        cached_input_tokens=n("cachedContentTokenCount"),
        output_tokens=n("candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )


def render_usage(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens - usage.reasoning_tokens,
        "totalTokenCount": usage.total_tokens,
        "cachedContentTokenCount": usage.cached_input_tokens,
        "thoughtsTokenCount": usage.reasoning_tokens,
    }


# Schemas ----------------------------------------------------------------------------------


def clean_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> dict[str, Any]:
    """A JSON Schema cut down to what Gemini accepts: `$ref`s inlined from `$defs`, type arrays
    turned into `nullable`/`anyOf`, `const` into a one-value `enum`, unknown keywords dropped."""
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return {}
    if defs is None:
        found = schema.get("$defs") or schema.get("definitions")
        defs = found if isinstance(found, dict) else {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        merged = {
            **(target if isinstance(target, dict) else {}),
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
        return clean_schema(merged, defs, depth + 1)
    out = {k: v for k, v in schema.items() if k in _SCHEMA_KEYS}
    if schema.get("const") is not None:
        out["enum"] = [schema["const"]]
    if isinstance(schema.get("oneOf"), list) and "anyOf" not in out:
        out["anyOf"] = schema["oneOf"]
    _clean_type(out)
    if isinstance(out.get("enum"), list):
        out["enum"] = [str(v) for v in out["enum"] if v is not None]
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            k: clean_schema(v, defs, depth + 1) for k, v in out["properties"].items()
        }
        if isinstance(out.get("required"), list):
            out["required"] = [r for r in out["required"] if r in out["properties"]]
        if not out["properties"]:  # Gemini: "properties should be non-empty for OBJECT type"
            out.pop("properties")
            out.pop("required", None)
    if "items" in out:
        out["items"] = clean_schema(out["items"], defs, depth + 1)
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [clean_schema(s, defs, depth + 1) for s in out["anyOf"]]
    return out


def _clean_type(out: dict[str, Any]) -> None:
    kind = out.get("type")
    if not isinstance(kind, list):
        return
    kinds = [k for k in kind if k != "null"]
    if len(kinds) < len(kind):
        out["nullable"] = True
    if len(kinds) == 1:
        out["type"] = kinds[0]
    else:
        out.pop("type")
        if kinds:
            out["anyOf"] = [{"type": k} for k in kinds]


# Requests ---------------------------------------------------------------------------------


def _render_part(part: ir.Part, names: dict[str, str], param: str) -> dict[str, Any] | None:
    if isinstance(part, ir.Text):
        return {"text": part.text} if part.text else None
    if isinstance(part, ir.Image):
        if part.data is not None:
            return {"inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}}
        url = part.url or ""
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    if isinstance(part, ir.ToolCall):
        call: dict[str, Any] = {
            "functionCall": {"name": part.name, "args": json_object(part.arguments, param)}
        }
        if part.signature:
            call["thoughtSignature"] = part.signature
        return call
    if isinstance(part, ir.ToolResult):
        name = names.get(part.tool_call_id) or part.name
        if not name:
            raise InvalidRequest(
                f"The tool result for {part.tool_call_id!r} answers no earlier tool call.",
                param=param,
            )
        return {"functionResponse": {"name": name, "response": _result_object(part)}}
    return None  # thinking stays with the model that produced it


def _result_images(request: ir.ChatRequest, result: ir.ToolResult) -> list[dict[str, Any]]:
    """A function response carries JSON only: a tool result's images go in the same turn as
    parts of their own; one known only by URL cannot, and is named."""
    images = [c for c in result.content if isinstance(c, ir.Image)]
    if any(image.data is None for image in images):
        ir.warn(request, "image by URL in a tool result dropped")
    return [
        {"inlineData": {"mimeType": image.media_type or "image/png", "data": image.data}}
        for image in images
        if image.data is not None
    ]


def _result_object(result: ir.ToolResult) -> dict[str, Any]:
    said = ir.result_text(result)
    try:
        parsed = json_object(said, "content")
    except InvalidRequest:
        parsed = None
    if parsed is not None and said.strip():
        return parsed
    return {"error": said} if result.is_error else {"result": said}


# The largest thinking budget each model takes (Google answers a larger one with a 400):
# 32,768 for the Pro models, 24,576 for the others.
_THINKING_MAX = (("gemini-2.5-pro", 32_768), ("gemini-3-pro", 32_768), ("", 24_576))


def _thinking_budget(request: ir.ChatRequest) -> int | None:
    budget = request.thinking_budget
    if not budget:
        return None
    most = next(limit for prefix, limit in _THINKING_MAX if request.model.startswith(prefix))
    if budget > most:  # e.g. Claude Code's 31,999 for a Claude model, failed over or routed here
        ir.warn(request, f"thinking budget lowered to {most}, this model's maximum")
        return most
    return budget


def _generation_config(request: ir.ChatRequest) -> dict[str, Any]:
    budget = _thinking_budget(request)
    generation: dict[str, Any] = {
        "maxOutputTokens": request.max_output_tokens,
        "temperature": request.temperature,
        "topP": request.top_p,
        "stopSequences": request.stop or None,
        "thinkingConfig": {"thinkingBudget": budget, "includeThoughts": True} if budget else None,
    }
    if request.output_format:  # JSON mode, with the schema when there is one
        generation["responseMimeType"] = "application/json"
        if request.output_format["type"] == "json_schema":
            generation["responseSchema"] = clean_schema(request.output_format["schema"])
    return {k: v for k, v in generation.items() if v is not None}


def _contents(request: ir.ChatRequest) -> list[dict[str, Any]]:
    names = ir.tool_names(request.messages)
    contents = []
    for i, message in enumerate(ir.merge_turns(request.messages)):
        parts = []
        for part in message.parts:
            if (rendered := _render_part(part, names, f"messages[{i}]")) is not None:
                parts.append(rendered)
            if isinstance(part, ir.ToolResult):  # its images, beside the function's answer
                parts += _result_images(request, part)
        if parts:
            contents.append(
                {"role": "model" if message.role == "assistant" else "user", "parts": parts}
            )
    return contents


def render_request(request: ir.ChatRequest) -> dict[str, Any]:
    if request.reasoning_effort:
        ir.warn(request, "reasoning_effort dropped")
    if request.parallel_tool_calls is False and request.tools:
        ir.warn(request, "parallel_tool_calls=false dropped")
    contents = _contents(request)
    if request.model.startswith(_SIGNED_CALLS):
        _sign_calls(contents)
    body: dict[str, Any] = {"contents": contents}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(request.system)}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    if request.tool_choice is not None:
        config: dict[str, Any] = {"mode": _MODES_OUT[request.tool_choice.mode]}
        if request.tool_choice.mode == "tool":
            config["allowedFunctionNames"] = [request.tool_choice.name]
        body["toolConfig"] = {"functionCallingConfig": config}
    if generation := _generation_config(request):
        body["generationConfig"] = generation
    if request.source == FAMILY:
        body.update({k: v for k, v in request.extras.items() if k not in body})
    return body


def _sign_calls(contents: list[dict[str, Any]]) -> None:
    """Gemini 3 refuses a history whose model turns call functions without the turn's thought
    signature (on the first call of each step). Clients of other families never see those
    signatures, so a call that came back without one gets the placeholder Google documents for
    history it did not produce; the model then reasons without its earlier thoughts."""
    for content in contents:
        if content["role"] != "model":
            continue
        calls = [part for part in content["parts"] if "functionCall" in part]
        if calls and not any("thoughtSignature" in part for part in calls):
            calls[0]["thoughtSignature"] = _PLACEHOLDER_SIGNATURE


def _declaration(tool: ir.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    parameters = clean_schema(tool.parameters)
    if parameters.get("properties") or parameters.get("type") not in ("object", None):
        out["parameters"] = parameters
    return out


def parse_part(raw: Any, param: str, calls: list[ir.ToolCall], prefix: str) -> ir.Part:
    part = obj(raw, param)
    if "text" in part:
        said = text(part["text"], f"{param}.text")
        if part.get("thought") is True:
            return ir.Thinking(said, opt_str(part, "thoughtSignature", f"{param}.thoughtSignature"))
        return ir.Text(said)
    if "inlineData" in part:
        data = obj(part["inlineData"], f"{param}.inlineData")
        return ir.Image(
            media_type=opt_str(data, "mimeType", f"{param}.inlineData.mimeType"),
            data=text(data.get("data"), f"{param}.inlineData.data"),
        )
    if "fileData" in part:
        data = obj(part["fileData"], f"{param}.fileData")
        return ir.Image(
            media_type=opt_str(data, "mimeType", f"{param}.fileData.mimeType"),
            url=text(data.get("fileUri"), f"{param}.fileData.fileUri"),
        )
    if "functionCall" in part:
        call = obj(part["functionCall"], f"{param}.functionCall")
        given = call.get("id")
        parsed = ir.ToolCall(
            id=given if isinstance(given, str) and given else call_id(prefix, len(calls)),
            name=text(call.get("name"), f"{param}.functionCall.name"),
            arguments=dumps(obj(call.get("args", {}), f"{param}.functionCall.args")),
            signature=opt_str(part, "thoughtSignature", f"{param}.thoughtSignature"),
        )
        calls.append(parsed)
        return parsed
    if "functionResponse" in part:
        answer = obj(part["functionResponse"], f"{param}.functionResponse")
        name = text(answer.get("name"), f"{param}.functionResponse.name")
        # Answers pair with their call by id where both carry one, else with the earliest
        # unanswered call of that name.
        given = answer.get("id")
        match = next((c for c in calls if isinstance(given, str) and c.id == given), None)
        match = match or next((c for c in calls if c.name == name), None)
        if match is not None:
            calls.remove(match)
        content: list[ir.Text | ir.Image] = [ir.Text(dumps(answer.get("response", {})))]
        return ir.ToolResult(match.id if match else call_id(prefix + name, 0), content, name=name)
    raise InvalidRequest("Unsupported part.", param=param)


def _parameters(declaration: dict[str, Any], param: str) -> dict[str, Any]:
    """A declaration's parameters as JSON Schema: `parametersJsonSchema` as given, Gemini's
    `parameters` Schema with its types in lower case."""
    if declaration.get("parametersJsonSchema") is not None:
        return obj(declaration["parametersJsonSchema"], f"{param}.parametersJsonSchema")
    given = obj(declaration.get("parameters", {"type": "object"}), f"{param}.parameters")
    lowered: dict[str, Any] = lower_types(given)
    return lowered


def parse_request(body: dict[str, Any], *, model: str = "") -> ir.ChatRequest:
    """A Gemini-shaped request body; the model comes from the URL."""
    request = ir.ChatRequest(model=model or str(body.get("model", "")), messages=[])
    if body.get("systemInstruction") is not None:
        system = obj(body["systemInstruction"], "systemInstruction")
        request.system = [
            text(
                obj(p, f"systemInstruction.parts[{i}]").get("text"),
                f"systemInstruction.parts[{i}].text",
            )
            for i, p in enumerate(arr(system.get("parts", []), "systemInstruction.parts"))
        ]
    pending: list[ir.ToolCall] = []
    for i, raw in enumerate(arr(body.get("contents"), "contents")):
        content = obj(raw, f"contents[{i}]")
        role: ir.Role = "assistant" if content.get("role") == "model" else "user"
        parts = [
            parse_part(p, f"contents[{i}].parts[{j}]", pending, f"h{i}")
            for j, p in enumerate(arr(content.get("parts"), f"contents[{i}].parts"))
        ]
        request.messages.append(ir.Message(role, parts))
    for i, raw in enumerate(arr(body.get("tools", []), "tools")):
        tool = obj(raw, f"tools[{i}]")
        for j, d in enumerate(arr(tool.get("functionDeclarations", []), f"tools[{i}]")):
            declaration = obj(d, f"tools[{i}].functionDeclarations[{j}]")
            request.tools.append(
                ir.Tool(
                    name=text(
                        declaration.get("name"), f"tools[{i}].functionDeclarations[{j}].name"
                    ),
                    description=opt_str(declaration, "description", "description"),
                    parameters=_parameters(declaration, f"tools[{i}].functionDeclarations[{j}]"),
                )
            )
    _parse_config(body, request)
    request.extras = {k: v for k, v in body.items() if k not in _CONSUMED}
    request.source = FAMILY
    return request


def _parse_config(body: dict[str, Any], request: ir.ChatRequest) -> None:
    tool_config = obj(body.get("toolConfig", {}), "toolConfig")
    if "functionCallingConfig" in tool_config:
        config = obj(tool_config["functionCallingConfig"], "toolConfig.functionCallingConfig")
        mode = _MODES_IN.get(str(config.get("mode", "AUTO")), "auto")
        allowed = config.get("allowedFunctionNames")
        if mode == "required" and isinstance(allowed, list) and len(allowed) == 1:
            request.tool_choice = ir.ToolChoice("tool", str(allowed[0]))
        else:
            request.tool_choice = ir.ToolChoice(mode)  # type: ignore[arg-type]  # from the table
    generation = obj(body.get("generationConfig", {}), "generationConfig")
    request.max_output_tokens = opt_int(generation, "maxOutputTokens", "maxOutputTokens")
    request.temperature = opt_float(generation, "temperature", "generationConfig.temperature")
    request.top_p = opt_float(generation, "topP", "generationConfig.topP")
    stops = generation.get("stopSequences") or []
    request.stop = [text(s, "generationConfig.stopSequences") for s in arr(stops, "stopSequences")]
    thinking = obj(generation.get("thinkingConfig", {}), "generationConfig.thinkingConfig")
    if thinking.get("thinkingBudget") != -1:  # -1: dynamic, the target's own default
        request.thinking_budget = opt_int(
            thinking, "thinkingBudget", "generationConfig.thinkingConfig.thinkingBudget"
        )
    request.output_format = output_format(generation)


# Responses --------------------------------------------------------------------------------


def stop_reason(finish: Any, parts: list[ir.Part]) -> ir.StopReason:
    if finish == "MAX_TOKENS":
        return "max_tokens"
    if finish in _FILTERED:
        return "content_filter"
    if finish not in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
        return "other"  # MALFORMED_FUNCTION_CALL, OTHER, …
    return "tool_use" if any(isinstance(p, ir.ToolCall) for p in parts) else "end_turn"


def parse_response(body: dict[str, Any]) -> ir.ChatResponse:
    response_id = str(body.get("responseId", ""))
    candidates = arr(body.get("candidates", []), "candidates")
    candidate = obj(candidates[0], "candidates[0]") if candidates else {}
    content = obj(candidate.get("content", {}), "candidates[0].content")
    calls: list[ir.ToolCall] = []
    parts = [
        parse_part(p, f"candidates[0].content.parts[{i}]", calls, response_id)
        for i, p in enumerate(arr(content.get("parts", []), "parts"))
    ]
    blocked = not candidates and isinstance(body.get("promptFeedback"), dict)
    return ir.ChatResponse(
        id=response_id,
        model=str(body.get("modelVersion", "")),
        parts=parts,
        stop_reason="content_filter"
        if blocked
        else stop_reason(candidate.get("finishReason"), parts),
        usage=usage_from(body.get("usageMetadata")),
    )


def render_response(response: ir.ChatResponse) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for part in response.parts:
        if isinstance(part, ir.Thinking) and part.text:
            parts.append({"text": part.text, "thought": True})
        elif isinstance(part, ir.Text | ir.ToolCall):
            rendered = _render_part(part, {}, "content")
            if rendered is not None:
                parts.append(rendered)
    return {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": FINISH_REASONS.get(response.stop_reason, "STOP"),
                "index": 0,
            }
        ],
        "usageMetadata": render_usage(response.usage),
        "modelVersion": response.model,
        "responseId": response.id,
    }
