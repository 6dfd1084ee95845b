"""A bound on how deeply a request body nests, checked once, where the body is parsed.

orjson reads up to 1024 levels but writes at most 254, and the code that walks a body (token
counting, translation, schema checks) recurses: a body nested a few hundred deep parsed fine,
then failed somewhere downstream as a 500. Real requests nest a few tens of levels at most (a
tool's JSON Schema is the deepest part), so a body deeper than `MAX_DEPTH` is refused with 400.
"""

from __future__ import annotations

import orjson

from api.errors import InvalidRequest

MAX_DEPTH = 128
_TOO_DEEP_LINE = b"\n" + b"  " * (MAX_DEPTH + 1)


def may_nest_too_deep(raw: bytes) -> bool:
    """False for a body with no more brackets than the limit: most stop here, at C speed."""
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def too_deep(parsed: object) -> bool:
    """Whether `parsed` has a non-empty array or object more than `MAX_DEPTH` levels deep."""
    try:
        # Indented, orjson writes every member on its own line, two spaces per level (a raw
        # newline never occurs inside a string): a line indented past the limit is found at
        # C speed, where walking a large body costs several times more (measured).
        text = orjson.dumps(parsed, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:  # deeper than orjson writes, or numbers it does not
        return _walk(parsed)
    return _TOO_DEEP_LINE in text


def _walk(parsed: object) -> bool:
    """`too_deep` level by level: the point is not to recurse on what a client sent."""
    level = [parsed] if isinstance(parsed, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list) and child
        ]
        if not level:
            return False
    return True


def check_depth(raw: bytes, parsed: object) -> None:
    """400 for a body (`raw`, parsed as `parsed`) nested deeper than `MAX_DEPTH`."""
    if may_nest_too_deep(raw) and too_deep(parsed):
        raise InvalidRequest(f"The request body nests deeper than {MAX_DEPTH} levels.")
