"""Typed reads of untrusted JSON: a wrong type is `InvalidRequest` naming the field, never a
KeyError or TypeError (SPEC §6: bad input never causes a 500). Also the SSE framing helpers the
encoders share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from api.errors import AppError, InvalidRequest, UpstreamError

T = TypeVar("T")


def _bad(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"`{param}` must be {what}.", param=param)


def obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(param, "an object")
    return value


def arr(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(param, "an array")
    return value


def text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _bad(param, "a string")
    return value


def required(body: dict[str, Any], key: str, param: str) -> Any:
    if key not in body or body[key] is None:
        raise InvalidRequest(f"`{param}` is required.", param=param)
    return body[key]


def opt_str(body: dict[str, Any], key: str, param: str) -> str | None:
    value = body.get(key)
    return None if value is None else text(value, param)


def opt_int(body: dict[str, Any], key: str, param: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(param, "a non-negative integer")
    return value


def opt_float(body: dict[str, Any], key: str, param: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(param, "a number")
    return float(value)


def opt_bool(body: dict[str, Any], key: str, param: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(param, "a boolean")
    return value


def stop_list(value: Any, param: str) -> list[str]:
    """`stop` / `stop_sequences`: a string or an array of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [text(item, f"{param}[{i}]") for i, item in enumerate(arr(value, param))]


def json_object(arguments: str, param: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object ("" counts as {})."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise _bad(param, "a JSON object encoded as a string") from exc
    return obj(parsed, param)


def loads(data: bytes, param: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"`{param}` is not valid JSON.", param=param) from exc


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def upstream_body(parse: Callable[[dict[str, Any]], T], body: Any, provider: str) -> T:
    """Parse a provider's answer: a malformed one is the provider's fault (502)."""
    try:
        return parse(obj(body, "response"))
    except AppError as exc:
        raise UpstreamError(
            f"The {provider} provider sent a malformed answer: {exc.message}"
        ) from exc


def event_json(data: bytes) -> dict[str, Any]:
    """One upstream stream event's JSON object; anything else is the provider's fault (502)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamError("The provider sent a malformed stream event.")
    return parsed


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"
