"""Gemini's field names in one spelling, its Schema as JSON Schema spells it, and its JSON mode
as the IR's structured output (no I/O).

Google's JSON mapping takes a field by its lowerCamelCase name or by its proto name
(`thinking_budget`), and google-genai sends some of the latter (`thinkingConfig`, `inlineData`,
`fileData`, function declarations): `canonical` renames them, once, before anything reads the
body, leaving alone what is the client's own data (call arguments, function results, labels)
or a JSON Schema. `lower_types` reads Gemini's Schema (`"type": "OBJECT"`) as JSON Schema.
"""

from __future__ import annotations

from typing import Any

from api.gateway.translate.fields import obj

# Fields whose values are the client's own data or a schema, whose names are not Gemini's.
_OPAQUE = frozenset(
    {"args", "response", "parametersJsonSchema", "responseJsonSchema", "_responseJsonSchema",
     "labels", "data", "text", "metadata"}
)  # fmt: skip
_SCHEMAS = frozenset({"parameters", "responseSchema"})
_MAX_DEPTH = 64


def _camel(name: str) -> str:
    head, _, rest = name.partition("_")
    if not head or not rest:
        return name
    return head + "".join(word[:1].upper() + word[1:] for word in rest.split("_"))


def canonical(value: Any, depth: int = 0) -> Any:
    """A Gemini request with its field names in lowerCamelCase (see the module docstring)."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [canonical(item, depth + 1) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _camel(key) if "_" in key else key
        if name in _OPAQUE:
            out[name] = item
        elif name in _SCHEMAS:
            out[name] = _schema(item, depth + 1)
        else:
            out[name] = canonical(item, depth + 1)
    return out


def _schema(schema: Any, depth: int) -> Any:
    """Gemini's Schema with its keywords in lowerCamelCase (property names left alone)."""
    if depth > _MAX_DEPTH or not isinstance(schema, dict | list):
        return schema
    if isinstance(schema, list):
        return [_schema(item, depth + 1) for item in schema]
    out: dict[str, Any] = {}
    for key, item in schema.items():
        name = _camel(key) if "_" in key else key
        if name == "properties" and isinstance(item, dict):
            out[name] = {prop: _schema(inner, depth + 1) for prop, inner in item.items()}
        elif name in ("items", "anyOf"):
            out[name] = _schema(item, depth + 1)
        else:
            out[name] = item
    return out


def lower_types(schema: Any, depth: int = 0) -> Any:
    """Gemini's Schema (`"type": "OBJECT"`, as the SDK writes it) as JSON Schema spells it."""
    if depth > _MAX_DEPTH:
        return {}
    if isinstance(schema, list):
        return [lower_types(item, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: lower_types(v, depth + 1) for name, v in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = lower_types(value, depth + 1)
        else:
            out[key] = value
    return out


def output_format(generation: dict[str, Any]) -> dict[str, Any] | None:
    """`responseMimeType` JSON → JSON mode; with `responseJsonSchema` or Gemini's
    `responseSchema`, a JSON schema named `response`."""
    if generation.get("responseMimeType") != "application/json":
        return None
    given = generation.get("responseJsonSchema", generation.get("_responseJsonSchema"))
    if given is None and generation.get("responseSchema") is not None:
        given = lower_types(obj(generation["responseSchema"], "generationConfig.responseSchema"))
    if given is None:
        return {"type": "json_object"}
    schema = obj(given, "generationConfig.responseJsonSchema")
    return {"type": "json_schema", "name": "response", "schema": schema}
