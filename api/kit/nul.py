"""NUL in text: PostgreSQL's `text` and `jsonb` cannot hold the character U+0000, so a string
carrying it would fail at the insert, as a 500, after the request was accepted. It is refused
where the request is read instead, with a 400 naming where it was."""

from __future__ import annotations

from typing import Any

from api.errors import InvalidRequest

ESCAPED = b"\\u0000"


def _where(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\0" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\0" in key:
                return inner
            found = _where(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _where(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def check_parsed(raw: bytes, parsed: Any) -> None:
    """400 if a string (a key or a value) of the parsed JSON body holds NUL; the raw body is
    looked at first, at C speed: almost every body stops there."""
    if ESCAPED not in raw:
        return
    where = _where(parsed, "")
    if where is not None:
        raise InvalidRequest(
            "Text may not contain the NUL character (\\u0000).", param=where or None
        )


def check_text(value: str, name: str) -> None:
    if "\0" in value:
        raise InvalidRequest("Text may not contain the NUL character (\\u0000).", param=name)


def check_value(value: Any, name: str) -> None:
    """400 if `value` (parsed JSON) holds NUL anywhere: for what is stored as it came."""
    where = _where(value, name)
    if where is not None:
        raise InvalidRequest("Text may not contain the NUL character (\\u0000).", param=where)
