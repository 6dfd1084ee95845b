"""Checks of Responses API objects and streams against the published shape.

The JSON Schema (`tests/fixtures/responses_schema.json`) is written from OpenAI's Responses API
reference and the Open Responses specification (its description names both); these helpers
validate a response object or a stream's events against it, and check what a schema cannot
say: Tollgate's id scheme, one response id throughout a stream, item ids that agree between a
stream's events and its final response, and sequence numbers in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

SCHEMA_PATH = Path(__file__).resolve().parent / "fixtures" / "responses_schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_bytes())


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]})


_RESPONSE = _validator("Response")
_EVENT = _validator("StreamEvent")

RESPONSE_ID = re.compile(r"^resp_[0-9a-f]{48}$")
ITEM_PREFIXES = {"message": "msg_", "function_call": "fc_", "reasoning": "rs_"}
LIFECYCLE = {
    "response.created",
    "response.in_progress",
    "response.completed",
    "response.incomplete",
    "response.failed",
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# What a response object may change between its first event and its last.
_CHANGING = {"status", "output", "usage", "completed_at", "error", "incomplete_details"}


def schema_errors(validator: Draft202012Validator, value: Any) -> list[str]:
    return sorted(
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(value)
    )


def response_errors(response: Any) -> list[str]:
    return schema_errors(_RESPONSE, response)


def event_errors(event: Any) -> list[str]:
    return schema_errors(_EVENT, event)


def check_response(response: Any) -> dict[str, Any]:
    """`response` matches the published response object; returned for further checks."""
    errors = response_errors(response)
    assert not errors, "\n".join(errors)
    assert isinstance(response, dict)
    return response


def check_ids(response: Mapping[str, Any]) -> None:
    """Tollgate's id scheme: `resp_` and 48 hex digits, items by kind, each id once."""
    assert RESPONSE_ID.match(response["id"]), response["id"]
    seen: set[str] = set()
    for item in response["output"]:
        prefix = ITEM_PREFIXES[item["type"]]
        assert item["id"].startswith(prefix), item["id"]
        assert not item["id"][len(prefix) :].startswith(tuple(ITEM_PREFIXES.values())), item["id"]
        assert item["id"] not in seen, item["id"]
        seen.add(item["id"])


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    """The JSON data of each event of a Responses stream, with its `event:` name checked."""
    events: list[dict[str, Any]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if not data:
            continue
        event = json.loads(b"\n".join(data))
        assert isinstance(event, dict), event
        assert name in (None, event.get("type")), (name, event.get("type"))
        events.append(event)
    return events


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every event matches the published shape, in the order the API keeps; the final
    response (the terminal event's) agrees with the item events. Returns that response."""
    for event in events:
        errors = event_errors(event)
        assert not errors, f"{event.get('type')}: " + "\n".join(errors)
    kinds = [event["type"] for event in events]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] in TERMINAL, kinds
    assert sum(kind in TERMINAL for kind in kinds) == 1, kinds
    lifecycle: list[dict[str, Any]] = [e["response"] for e in events if e["type"] in LIFECYCLE]
    first, final = lifecycle[0], lifecycle[-1]
    for response in lifecycle:  # one response: the same id and request echo throughout
        assert {k: v for k, v in response.items() if k not in _CHANGING} == {
            k: v for k, v in first.items() if k not in _CHANGING
        }
    assert first["output"] == []
    assert first["usage"] is None
    _check_items(events, final)
    return final


def _check_items(events: list[dict[str, Any]], final: Mapping[str, Any]) -> None:
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    texts: dict[tuple[str, int], list[str]] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] not in added
            assert event["output_index"] == len(added)
            added[event["output_index"]] = event["item"]
        elif kind == "response.output_item.done":
            assert event["item"]["id"] == added[event["output_index"]]["id"]
            done[event["output_index"]] = event["item"]
        elif "item_id" in event:  # deltas and parts name their item and its position
            assert event["item_id"] == added[event["output_index"]]["id"], event
            assert event["output_index"] not in done, event
            if kind.endswith(".delta"):
                texts.setdefault((event["item_id"], event.get("content_index", 0)), [])
                texts[(event["item_id"], event.get("content_index", 0))].append(event["delta"])
            elif kind == "response.output_text.done":
                said = "".join(texts.get((event["item_id"], event["content_index"]), []))
                assert event["text"] == said
            elif kind == "response.function_call_arguments.done":
                assert event["arguments"] == "".join(texts.get((event["item_id"], 0), []))
    if final["status"] != "failed":  # a failed one may end with items unfinished
        assert sorted(done) == sorted(added)
        assert final["output"] == [done[i] for i in sorted(done)]


def kept(raw: Any, parsed: Any, path: str = "") -> None:
    """Every field of `raw` (the wire JSON) is in `parsed` (what an SDK made of it, dumped)
    with the same value: nothing lost."""
    if isinstance(raw, dict):
        assert isinstance(parsed, dict), f"{path}: {parsed!r}"
        for key, value in raw.items():
            assert key in parsed, f"{path}/{key} lost"
            kept(value, parsed[key], f"{path}/{key}")
    elif isinstance(raw, list):
        assert isinstance(parsed, list), f"{path}: {parsed!r}"
        assert len(parsed) == len(raw), f"{path}: {parsed!r}"
        for i, (a, b) in enumerate(zip(raw, parsed, strict=True)):
            kept(a, b, f"{path}/{i}")
    else:
        assert raw == parsed, f"{path}: {raw!r} became {parsed!r}"
