"""Claude Code's own traffic, replayed on the translated path.

tests/fixtures/clients/claude_code.json holds every request Claude Code sent to `/v1/messages`
in sessions on a Claude, a GPT and a Gemini model name (`record_claude_code.py` records it): the
`?beta=true` query string and its `anthropic-beta` values, a system prompt in blocks with
`cache_control`, `role: "system"` messages in the middle of `messages`, `thinking` (enabled with a
budget, or adaptive with `output_config.effort`) and thinking blocks with their signatures in the
history, `context_management`, tools with `defer_loading`, `metadata.user_id`, tool results with
`cache_control`, with `is_error`, holding an image, and holding a PDF `document`.

Each request is sent as recorded, to a GPT and to a Gemini model (and to Claude, forwarded), and
must come back as a complete Anthropic stream whose answer is the one its history asks for: the
scripted model decides from the prompt's directive and the tool results after it, so a shape the
translation lost shows in the answer. What reached the upstream is checked too: no
`cache_control` where the target has none, no Anthropic signature outside Anthropic, only the
target's roles, every tool result answering its call, and the mid-conversation system messages
inside the target's system instruction. Its count_tokens twin is answered too, and every call is
metered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.clients.harness import CLAUDE, GEMINI, GPT, Fakes, Gateway, assert_metered
from tests.e2e.clients.scripted import PREAMBLE, _flat, decide
from tests.fakes.anthropic_upstream import SIGNATURE

RECORDED = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "clients" / "claude_code.json").read_text()
)
REQUESTS = RECORDED["requests"]


def _expected(body: dict[str, Any]) -> tuple[str, str | None]:
    """(text, tool called) the scripted model answers this history with, read the Anthropic way."""
    history: list[tuple[str, str]] = []
    for message in body["messages"]:
        content = message["content"]
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            if block["type"] == "tool_result":
                history.append(("result", _flat(block.get("content", ""))))
            elif block["type"] == "text" and message["role"] == "user":
                history.append(("said", block["text"]))
    turn = decide(history, [t["name"] for t in body["tools"]])
    return turn.text, turn.tool


def _events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]


def _mid_conversation_system(body: dict[str, Any]) -> list[str]:
    texts = []
    for message in body["messages"]:
        if message["role"] == "system":
            texts.append(_flat(message["content"]))
    return texts


def _check_openai(sent: dict[str, Any], body: dict[str, Any]) -> None:
    roles = {m["role"] for m in sent["messages"]}
    assert roles <= {"system", "developer", "user", "assistant", "tool"}, roles
    instructions = " ".join(
        _flat(m["content"]) for m in sent["messages"] if m["role"] in ("system", "developer")
    )
    for text in _mid_conversation_system(body):
        assert text in instructions
    called: set[str] = set()
    for message in sent["messages"]:
        called |= {c["id"] for c in message.get("tool_calls") or []}
        if message["role"] == "tool":
            assert message["tool_call_id"] in called
    results = sum(
        1 for m in body["messages"] if isinstance(m["content"], list)
        for b in m["content"] if b["type"] == "tool_result"
    )  # fmt: skip
    assert sum(1 for m in sent["messages"] if m["role"] == "tool") == results


def _check_gemini(sent: dict[str, Any], body: dict[str, Any]) -> None:
    assert {c["role"] for c in sent["contents"]} <= {"user", "model"}
    instructions = _flat(sent.get("systemInstruction", {}).get("parts", []))
    for text in _mid_conversation_system(body):
        assert text in instructions
    calls = [p["functionCall"]["name"] for c in sent["contents"] for p in c["parts"]
             if "functionCall" in p]  # fmt: skip
    answers = [p["functionResponse"]["name"] for c in sent["contents"] for p in c["parts"]
               if "functionResponse" in p]  # fmt: skip
    assert answers == calls


@pytest.mark.parametrize("target", [GPT, GEMINI, CLAUDE])
@pytest.mark.parametrize(
    "recorded", REQUESTS, ids=[f"{r['model']}-{i}" for i, r in enumerate(REQUESTS)]
)
def test_claude_code_request_on_every_family(
    gateway: Gateway, fakes: Fakes, key: str, recorded: dict[str, Any], target: str
) -> None:
    body = {**recorded["body"], "model": target}
    headers = {**recorded["headers"], "x-api-key": key}
    url = f"{gateway.url}{recorded['path']}"
    with httpx.Client(timeout=30) as http:
        answer = http.post(url, params=recorded["query"], headers=headers, json=body)
        assert answer.status_code == 200, answer.text
        events = _events(answer.text)
        counted = http.post(
            f"{gateway.url}/v1/messages/count_tokens", params=recorded["query"], headers=headers,
            json={k: body[k] for k in ("model", "messages", "system", "tools", "thinking")
                  if k in body},
        )  # fmt: skip
    assert counted.status_code == 200, counted.text
    assert counted.json()["input_tokens"] > 0

    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "error" not in kinds
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    tools = [e["content_block"] for e in events if e["type"] == "content_block_start"
             and e["content_block"]["type"] == "tool_use"]  # fmt: skip
    expected_text, expected_tool = _expected(recorded["body"])
    if expected_tool is not None:
        assert text == PREAMBLE or target == GEMINI  # Gemini calls without a word first
        assert [t["name"] for t in tools] == [expected_tool]
        assert kinds.count("content_block_stop") == kinds.count("content_block_start")
    elif expected_text.startswith("Tool result: "):
        assert text.startswith("Tool result: "), text
        assert ("tollgate-7f3a" in text) == ("tollgate-7f3a" in expected_text), text
        assert ("File does not exist" in text) == ("File does not exist" in expected_text), text
    else:
        assert text == expected_text

    seen = {GPT: fakes.openai.seen, GEMINI: fakes.gemini.seen, CLAUDE: fakes.anthropic.seen}
    sent = seen[target][0].body
    if target == GPT:
        _check_openai(sent, recorded["body"])
    elif target == GEMINI:
        _check_gemini(sent, recorded["body"])
    if target != CLAUDE:
        assert "cache_control" not in json.dumps(sent)
        assert SIGNATURE not in json.dumps(sent)
        if '"application/pdf"' in json.dumps(recorded["body"]):  # Read of a PDF: named
            assert "documents dropped" in answer.headers.get("x-tollgate-warning", "")
    else:  # forwarded as sent, less the unknown fields the cost policy drops (and names)
        warning = answer.headers.get("x-tollgate-warning", "")
        dropped = warning.partition("dropped unknown fields: ")[2].split(";")[0].split(", ")
        kept = {k: v for k, v in recorded["body"].items() if k not in dropped}
        assert {**sent, "model": recorded["model"]} == kept
    assert_metered(gateway, key, fakes, target, "/v1/messages")


IMAGE_RESULTS = [
    r for r in REQUESTS
    if any(b["type"] == "tool_result" and "'image'" in str(b.get("content"))
           for m in r["body"]["messages"] if isinstance(m["content"], list) for b in m["content"])
]  # fmt: skip


@pytest.mark.parametrize(
    "target",
    [
        GPT,
        GEMINI,
    ],
)  # fmt: skip
def test_an_image_claude_code_read_reaches_the_model_or_is_named(
    gateway: Gateway, fakes: Fakes, key: str, target: str
) -> None:
    """Claude Code's Read returns images (screenshots) as an image in the tool result. A target
    whose tool results take no images gets it some other way, or the client is told."""
    assert IMAGE_RESULTS
    recorded = IMAGE_RESULTS[0]
    answer = httpx.post(
        f"{gateway.url}{recorded['path']}", params=recorded["query"],
        headers={**recorded["headers"], "x-api-key": key},
        json={**recorded["body"], "model": target}, timeout=30,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    seen = {GPT: fakes.openai.seen, GEMINI: fakes.gemini.seen}[target]
    forwarded = json.dumps(seen[0].body)
    data = next(
        b["content"][0]["source"]["data"] for m in recorded["body"]["messages"]
        if isinstance(m["content"], list) for b in m["content"]
        if b["type"] == "tool_result" and isinstance(b.get("content"), list)
        and b["content"] and b["content"][0].get("type") == "image"
    )  # fmt: skip
    named = "image" in answer.headers.get("x-tollgate-warning", "")
    assert data in forwarded or named
