"""Fake models a test steers from the prompt, in each provider's real wire format.

Agents such as Claude Code and Codex offer their own tools and wrap the user's prompt in
context of their own, so a fake that calls the first tool offered is no use to them. These
models read directives the test writes into the user's prompt instead:

    [[say TEXT]]            answer TEXT
    [[call NAME ARGS]]      call the offered tool NAME with ARGS (a JSON object); several may
                            be given: the first whose tool is offered is called

A call comes after a line of text (`Let me check.`), as models often say something first, so
clients carry text and a call in one turn. Once the conversation holds a tool result, the model
answers `Tool result: <result text>`, so
the answer proves the client ran the tool and sent its output back. Without a directive it
answers `OK` (agents make side calls of their own, e.g. a title). Usage is reported as the
parent fakes report it, so what Tollgate metered can be checked against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes import gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.upstream import _ENCODING, FakeUpstream, Seen, client_port

_SAY = re.compile(r"\[\[say (.+?)\]\]", re.S)
_CALL = re.compile(r"\[\[call (\S+) (\{.*?\})\]\]", re.S)
PREAMBLE = "Let me check."


@dataclass(frozen=True)
class Turn:
    """What the model does next: a text answer, or a tool call."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None


def decide(history: list[tuple[str, str]], offered: list[str]) -> Turn:
    """The next turn from the conversation, as ("said", user text) and ("result", tool result)
    in order, and the names of the tools offered: the last user text with a directive decides,
    and tool results after it are answered."""
    steered = [i for i, (kind, text) in enumerate(history)
               if kind == "said" and ("[[say " in text or "[[call " in text)]  # fmt: skip
    at = steered[-1] if steered else -1
    results = [text for kind, text in history[at + 1 :] if kind == "result"]
    if results:
        return Turn(text="Tool result: " + " | ".join(results))
    text = history[at][1] if at >= 0 else ""
    for name, raw in _CALL.findall(text):
        if name in offered:
            return Turn(text=PREAMBLE, tool=name, arguments=json.loads(raw))
    if _CALL.search(text):
        return Turn(text=f"No such tool offered; offered: {', '.join(offered)}")
    found = _SAY.search(text)
    return Turn(text=found.group(1) if found else "OK")


def _tokens(text: str) -> int:
    return len(_ENCODING.encode(text))


def _flat(value: Any) -> str:
    """The text of a content value of any family: a string, or a list of parts or blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_flat(part) for part in value)
    if isinstance(value, dict):
        for name in ("text", "content", "output"):
            if name in value:
                return _flat(value[name])
    return ""


# Anthropic ------------------------------------------------------------------------------------


class ScriptedAnthropic(FakeAnthropic):
    def _reply(self, body: dict[str, Any]) -> Reply:
        history: list[tuple[str, str]] = []
        for message in body["messages"]:
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
            for block in blocks:
                if block.get("type") == "tool_result":
                    history.append(("result", _flat(block.get("content", ""))))
                elif block.get("type") == "text" and message["role"] == "user":
                    history.append(("said", block.get("text") or ""))
        offered = [t["name"] for t in body.get("tools") or [] if "name" in t]
        turn = decide(history, offered)
        digest = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:20]
        thinking = None
        if (body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
            thinking = "Let me think about that."
        tool = None
        output = _tokens(turn.text) + (_tokens(thinking) if thinking else 0)
        if turn.tool is not None:
            tool = {"id": f"toolu_{digest}", "name": turn.tool, "input": turn.arguments}
            output += _tokens(json.dumps(turn.arguments))
        return Reply(f"msg_{digest}", body["model"], thinking, turn.text, tool,
                     self._usage(body, output))  # fmt: skip


# Gemini ---------------------------------------------------------------------------------------


class ScriptedGemini(FakeGemini):
    def _chunks(self, model: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        history: list[tuple[str, str]] = []
        for content in body["contents"]:
            for part in content.get("parts", []):
                if "functionResponse" in part:
                    response = part["functionResponse"].get("response")
                    history.append(("result", json.dumps(response, sort_keys=True)))
                elif "text" in part and content.get("role") == "user":
                    history.append(("said", part["text"]))
        offered = [d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations",
                                                                              [])]  # fmt: skip
        turn = decide(history, offered)
        prompt = sum(_tokens(_flat(c.get("parts", []))) for c in body["contents"])
        response_id = hashlib.sha256(json.dumps(body["contents"]).encode()).hexdigest()[:22]
        if turn.tool is not None:
            call = {"functionCall": {"name": turn.tool, "args": turn.arguments},
                    "thoughtSignature": gemini_upstream.SIGNATURE}  # fmt: skip
            # Gemini calls without a word first (and the parent fake's unstreamed answer keeps
            # either text or calls).
            usage = gemini_upstream._usage(prompt, _tokens(json.dumps(turn.arguments)))
            return [gemini_upstream._chunk([call], usage, model, response_id, "STOP")]
        usage = gemini_upstream._usage(prompt, _tokens(turn.text))
        return [gemini_upstream._chunk([{"text": turn.text}], usage, model, response_id, "STOP")]


# OpenAI: Chat Completions and the Responses API -----------------------------------------------


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


class ScriptedOpenAI(FakeUpstream):
    """OpenAI (and DeepSeek) Chat Completions, and OpenAI's Responses API."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, dict(request.headers), client_port(request)))
        kinds = {"user": "said", "tool": "result"}
        history = [(kinds[m["role"]], _flat(m.get("content"))) for m in body["messages"]
                   if m["role"] in kinds]  # fmt: skip
        offered = [t["function"]["name"] for t in body.get("tools") or [] if "function" in t]
        turn = decide(history, offered)
        prompt = sum(_tokens(_flat(m.get("content"))) + 4 for m in body["messages"])
        message: dict[str, Any] = {"role": "assistant", "content": turn.text}
        if turn.tool is not None:
            digest = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:16]
            message["tool_calls"] = [{
                "id": f"call_{digest}", "type": "function",
                "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments)},
            }]  # fmt: skip
        completion = _tokens(turn.text) + _tokens(json.dumps(turn.arguments) if turn.tool else "")
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        self.reported.append(usage)
        finish = "tool_calls" if turn.tool else "stop"
        head = {"id": "chatcmpl-scripted", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**head, "object": "chat.completion", "usage": usage,
                                      "choices": [{"index": 0, "message": message,
                                                   "finish_reason": finish}]})  # fmt: skip
        chunk = {**head, "object": "chat.completion.chunk"}
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas.append({"content": turn.text})
        if turn.tool is not None:
            deltas.append({"tool_calls": [{"index": 0, **message["tool_calls"][0]}]})
        events = [
            {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
        ]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        return await self._send(request, [_sse(e) for e in events] + [b"data: [DONE]\n\n"])

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, body, dict(request.headers), client_port(request)))
        items = body.get("input")
        items = [{"role": "user", "content": items}] if isinstance(items, str) else items or []
        history: list[tuple[str, str]] = []
        for item in items:
            if str(item.get("type")).endswith("_call_output"):
                history.append(("result", _flat(item.get("output"))))
            elif item.get("role") == "user":
                history.append(("said", _flat(item.get("content"))))
        offered = [t["name"] for t in body.get("tools") or [] if "name" in t]
        turn = decide(history, offered)
        self.responses_made += 1
        n = self.responses_made
        part = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}
        output: list[dict[str, Any]] = [{"id": f"msg_{n:048x}", "type": "message",
                                         "status": "completed", "role": "assistant",
                                         "content": [part]}]  # fmt: skip
        if turn.tool is not None:
            output.append({
                "id": f"fc_{n:048x}", "type": "function_call", "status": "completed",
                "arguments": json.dumps(turn.arguments), "call_id": f"call_{n:024x}",
                "name": turn.tool,
            })  # fmt: skip
        prompt = sum(_tokens(_flat(i.get("content") or i.get("output") or "")) + 4 for i in items)
        prompt += _tokens(body.get("instructions") or "")
        spent = _tokens(turn.text) + _tokens(json.dumps(turn.arguments) if turn.tool else "")
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": spent, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + spent}  # fmt: skip
        self.reported.append(usage)
        response = {
            "id": f"resp_{n:048x}", "object": "response", "created_at": 1, "status": "completed",
            "model": body["model"], "output": output, "usage": usage, "error": None,
            "incomplete_details": None, "instructions": body.get("instructions"),
            "tools": body.get("tools") or [], "parallel_tool_calls": True,
            "tool_choice": body.get("tool_choice", "auto"), "store": body.get("store", True),
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "text": {"format": {"type": "text"}}, "truncation": "disabled", "metadata": {},
        }  # fmt: skip
        if not body.get("stream"):
            return web.json_response(response)
        return await self._send(request, _response_events(response))

    async def _send(self, request: web.Request, events: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                await response.write(event)
                await asyncio.sleep(self.chunk_delay)
        except ConnectionError:
            self.disconnects += 1
        return response


def _response_events(response: dict[str, Any]) -> list[bytes]:
    """A Responses stream as OpenAI sends it, each event with its sequence number."""
    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        empty = {**item, "status": "in_progress"}
        if item["type"] == "function_call":
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**empty, "arguments": ""}})  # fmt: skip
            events.append({"type": "response.function_call_arguments.delta", **where,
                           "delta": item["arguments"]})  # fmt: skip
            events.append({"type": "response.function_call_arguments.done", **where,
                           "name": item["name"], "arguments": item["arguments"]})  # fmt: skip
        else:
            part = item["content"][0]
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": {**empty, "content": []}})  # fmt: skip
            at = {**where, "content_index": 0}
            events.append({"type": "response.content_part.added", **at,
                           "part": {**part, "text": ""}})  # fmt: skip
            events.append({"type": "response.output_text.delta", **at, "delta": part["text"],
                           "logprobs": []})  # fmt: skip
            events.append({"type": "response.output_text.done", **at, "text": part["text"],
                           "logprobs": []})  # fmt: skip
            events.append({"type": "response.content_part.done", **at, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": response})
    return [_sse({**e, "sequence_number": n}, e["type"]) for n, e in enumerate(events)]
