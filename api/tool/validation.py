"""Tool schemas never reach the network, and checking an input against one is bounded in time.

References: a schema may only refer within itself (`"$ref": "#/$defs/…"`). Registration refuses
any other reference, wherever it is, and the check runs with an empty `referencing.Registry`,
so a schema stored before that rule fails to resolve rather than fetching.

Time: the check runs off the event loop and has `DEADLINE_SECONDS`; missing it makes the input
invalid (an error result the model reads), not a hung turn. jsonschema is pure Python, which
gives up the GIL every few milliseconds, so a worker thread leaves the loop serving; a thread
cannot be killed, but one abandoned at the deadline ends by itself (its work is bounded by
the 64 KiB schema and the model's output). Regular expressions are the exception: `re`
matches in C without giving up the GIL, so one catastrophic `pattern` (`^(a+)+$`) would stall
every thread of the process, the loop's included. A schema with regexes is therefore checked
in a child process (`schema_check.py`), killed at the deadline; that costs a Python start-up
(~0.1 s measured, against ~0.3 ms in a thread), paid only by such schemas.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from api.tool.schema_check import first_error

DEADLINE_SECONDS = 1.0
START_SECONDS = 10.0  # the child's Python start-up, not counted in the deadline
_CHILD = Path(__file__).with_name("schema_check.py")
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
_TOO_SLOW = "The input could not be checked against the tool's schema in time."
_FAILED = "The input could not be checked against the tool's schema."


def _objects(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every object in `schema`, iteratively (it came from a client)."""
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def outside_reference(schema: dict[str, Any]) -> str | None:
    """The first reference in `schema` that points outside it, if any."""
    for node in _objects(schema):
        for keyword in _REFERENCES:
            target = node.get(keyword)
            if isinstance(target, str) and not target.startswith("#"):
                return target
    return None


def _has_regex(schema: dict[str, Any]) -> bool:
    return any(
        isinstance(node.get("pattern"), str) or node.get("patternProperties")
        for node in _objects(schema)
    )


async def check_input(
    schema: dict[str, Any], instance: object, limiter: anyio.CapacityLimiter
) -> str | None:
    """Why `instance` is refused (a sentence for the model), or None when it matches."""
    async with limiter:
        if _has_regex(schema):
            return await _in_child(schema, instance)
        with anyio.move_on_after(DEADLINE_SECONDS):
            why = await anyio.to_thread.run_sync(
                first_error, schema, instance, abandon_on_cancel=True
            )
            return None if why is None else _mismatch(why)
        return _TOO_SLOW


def _mismatch(why: str) -> str:
    return f"The input does not match the tool's schema: {why}"


async def _in_child(schema: dict[str, Any], instance: object) -> str | None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-P", str(_CHILD),  # -P: not its own directory on sys.path
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert child.stdout is not None  # a pipe was asked for
    try:
        async with asyncio.timeout(START_SECONDS):
            ready = await child.stdout.readline()
        if ready != b"ready\n":
            return _FAILED
        async with asyncio.timeout(DEADLINE_SECONDS):
            out, _ = await child.communicate(orjson.dumps([schema, instance]))
    except TimeoutError:
        return _TOO_SLOW
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    try:
        why = orjson.loads(out)
    except orjson.JSONDecodeError:  # it died (a recursion too deep for its stack, say)
        return _FAILED
    if why is None:
        return None
    return _mismatch(why) if isinstance(why, str) else _FAILED
