"""The OpenAPI document, as the app really answers: FastAPI's, corrected in one pass.

SDK generators and coding agents read `/openapi.json`; it must not promise what the app does
not do. FastAPI's own document differs from the app in four ways, each fixed here:

- **Errors.** FastAPI documents a 422 with its own body; Tollgate answers a bad request with
  400, and every error in its family's shape (SPEC §6): OpenAI's for most routes, Anthropic's
  under `/v1/messages`, Google's for Google's routes. Each operation lists the errors it can
  answer, and `default` says any other status is an error of the same shape.
- **Bodies the routes read themselves.** The model endpoints parse their own bodies (they are
  served before FastAPI's routing, `api.middleware.ProxyLane`), so FastAPI sees none; their
  request bodies are described here, with the fields Tollgate itself reads. Every other field
  is the provider's and is allowed (ADR 0002).
- **Path parameters those routes read:** `{model}` in Google's paths.
- **Other answers than JSON:** streams (`text/event-stream`), the CSV export, speech audio.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from api.error_handlers import google_path

_OBJECT: dict[str, Any] = {"type": "object"}
_STRING: dict[str, Any] = {"type": "string", "minLength": 1}
_MESSAGES: dict[str, Any] = {"type": "array", "minItems": 1, "items": _OBJECT}
_FILE: dict[str, Any] = {"type": "string", "format": "binary"}


def _json_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _form_body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


_GEMINI_BODY = _json_body(["contents"], {"contents": {"type": "array", "items": _OBJECT}})
_TRANSCRIPTION = _form_body(["file", "model"], {"file": _FILE, "model": _STRING})
# What each model endpoint's body must have; Tollgate reads these fields itself.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": _json_body(
        ["model", "messages"],
        {"model": _STRING, "messages": _MESSAGES, "stream": {"type": "boolean"}},
    ),
    "/v1/messages": _json_body(
        ["model", "messages", "max_tokens"],
        {
            "model": _STRING,
            "messages": _MESSAGES,
            "max_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
        },
    ),
    "/v1/messages/count_tokens": _json_body(
        ["model", "messages"], {"model": _STRING, "messages": _MESSAGES}
    ),
    "/v1/responses": _json_body(
        ["model", "input"],
        {
            "model": _STRING,
            "input": {"oneOf": [_STRING, {"type": "array", "items": _OBJECT}]},
            "stream": {"type": "boolean"},
        },
    ),
    "/v1/embeddings": _json_body(
        ["model", "input"],
        {"model": _STRING, "input": {"oneOf": [_STRING, {"type": "array", "minItems": 1}]}},
    ),
    "/v1/audio/speech": _json_body(
        ["model", "input", "voice"], {"model": _STRING, "input": _STRING, "voice": _STRING}
    ),
    "/v1/audio/transcriptions": _TRANSCRIPTION,
    "/v1/audio/translations": _TRANSCRIPTION,
    "/v1/images/generations": _json_body(["prompt"], {"model": _STRING, "prompt": _STRING}),
    "/v1/images/edits": _form_body(
        ["image", "prompt"], {"image": _FILE, "prompt": _STRING, "model": _STRING}
    ),
}
STREAMS = {"/v1/chat/completions", "/v1/messages", "/v1/responses"}

_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
_GOOGLE_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "status"],
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"type": "string"},
            },
        }
    },
}
SCHEMAS = {"Error": _OPENAI_ERROR, "AnthropicError": _ANTHROPIC_ERROR, "GoogleError": _GOOGLE_ERROR}

_MEANINGS = {
    "400": "Bad request: the field is named in the error's `param`.",
    "401": "Missing or invalid key.",
    "402": "A limit is reached, or the key is suspended for non-payment.",
    "403": "Not allowed: a standard key on a master route, or a provider or model the key may "
    "not use.",
    "404": "No such object (also another tenant's), or no such route.",
    "413": "The body is larger than the server accepts.",
    "429": "Rate limited (`Retry-After` says when to retry).",
    "502": "The provider failed.",
    "503": "The provider, or a backend Tollgate needs, is unavailable.",
    "504": "The provider timed out.",
    "default": "Any other error, in the same shape.",
}
_EVERY = ("400", "401", "404", "413")
_MANAGEMENT = (*_EVERY, "403")
_MODEL = (*_EVERY, "402", "403", "429", "502", "503", "504")


def _error_schema(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "AnthropicError"
    return "GoogleError" if google_path(path) else "Error"


def _errors(path: str, *, model_route: bool) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{_error_schema(path)}"}
    statuses = _MODEL if model_route else _MANAGEMENT
    content = {"application/json": {"schema": reference}}
    return {
        status: {"description": _MEANINGS[status], "content": content}
        for status in (*statuses, "default")
    }


def _path_parameters(path: str, operation: dict[str, Any]) -> None:
    declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
    for name in ("model",):
        if "{" + name + "}" in path and name not in declared:
            operation.setdefault("parameters", []).append(
                {"name": name, "in": "path", "required": True, "schema": _STRING}
            )


def _success_content(path: str, operation: dict[str, Any]) -> None:
    ok = operation.get("responses", {}).get("200")
    if ok is None:
        return
    content = ok.setdefault("content", {})
    if path in STREAMS or path.endswith(":streamGenerateContent"):
        content["text/event-stream"] = {"schema": {"type": "string"}}
    if path == "/v1/usage/export":
        ok["content"] = {"text/csv": {"schema": {"type": "string"}}}
    if path == "/v1/audio/speech":
        content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}


def correct(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, corrected as the module docstring says (in place)."""
    document.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    for schemas in (document["components"]["schemas"],):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            gemini = google_path(path) and method == "post"
            model_route = path in BODIES or gemini
            if method == "post" and path in BODIES:
                operation["requestBody"] = BODIES[path]
            elif gemini and not path.endswith(":countTokens"):
                operation["requestBody"] = _GEMINI_BODY
            _path_parameters(path, operation)
            _success_content(path, operation)
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, response in _errors(path, model_route=model_route).items():
                responses.setdefault(status, response)
    return document


def install(app: FastAPI) -> None:
    """`app.openapi()` returns the corrected document (built once, as FastAPI's is)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = correct(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
