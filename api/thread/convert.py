"""Stored message blocks ⇄ the gateway's internal representation (pure).

Messages are stored as Anthropic-style blocks so a thread reads the same whatever model answered:
`text`, `image` (`source` base64 or url), `thinking` (with its signature, sent back as is),
`redacted_thinking`, `tool_use` (`id`, `name`, `input`; Gemini's `signature` kept) and, in `tool`
messages, `tool_result` (`tool_use_id`, `name`, `content`, `is_error`, and how the webhook call
went: `attempts`, `latency_ms`).
"""

from __future__ import annotations

from typing import Any

import orjson

from api.errors import InvalidRequest
from api.gateway.translate import ir
from api.thread.models import ThreadMessage


def user_content(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client's `content` as stored blocks: text and images only."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not content:
        raise InvalidRequest("content: must not be empty.", param="content")
    blocks: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            blocks.append({"type": "text", "text": block["text"]})
        elif kind == "image" and isinstance(block.get("source"), dict):
            _image(block["source"], f"content[{i}].source")
            blocks.append({"type": "image", "source": block["source"]})
        else:
            raise InvalidRequest(
                f"content[{i}]: a text block {{type, text}} or an image block {{type, source}}.",
                param=f"content[{i}]",
            )
    return blocks


def _image(source: dict[str, Any], param: str) -> ir.Image:
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return ir.Image(
            media_type=str(source.get("media_type") or "image/png"), data=source["data"]
        )
    url = source.get("url")
    if (
        source.get("type") == "url"
        and isinstance(url, str)
        and url.startswith(("http://", "https://"))
    ):
        return ir.Image(url=url)
    raise InvalidRequest(f"{param}: base64 data with a media_type, or an http(s) url.", param=param)


def _part(block: dict[str, Any]) -> ir.Part | None:
    kind = block.get("type")
    if kind == "text":
        return ir.Text(str(block.get("text", "")))
    if kind == "image":
        return _image(block.get("source") or {}, "content")
    if kind == "thinking":
        return ir.Thinking(str(block.get("thinking", "")), block.get("signature") or None)
    if kind == "redacted_thinking":
        return ir.Thinking("", redacted=str(block.get("data", "")))
    if kind == "tool_use":
        arguments = orjson.dumps(block.get("input") or {}).decode()
        return ir.ToolCall(str(block["id"]), str(block["name"]), arguments, block.get("signature"))
    if kind == "tool_result":
        return ir.ToolResult(
            str(block["tool_use_id"]),
            [ir.Text(result_text(block.get("content")))],
            is_error=bool(block.get("is_error")),
            name=block.get("name"),
        )
    return None


def to_ir(message: ThreadMessage) -> ir.Message:
    role: ir.Role = "assistant" if message.role == "assistant" else "user"
    return ir.Message(role, [p for b in message.content if (p := _part(b)) is not None])


def blocks_to_ir(role: ir.Role, blocks: list[dict[str, Any]]) -> ir.Message:
    return ir.Message(role, [p for b in blocks if (p := _part(b)) is not None])


def result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return orjson.dumps(content).decode()


def _arguments(raw: str) -> Any:
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return {"_raw": raw}  # what the model produced is kept, even when it is not JSON


def from_ir(parts: list[ir.Part]) -> list[dict[str, Any]]:
    """An assistant answer's parts as stored blocks."""
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, ir.Text):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ir.Thinking):
            if part.redacted is not None:
                blocks.append({"type": "redacted_thinking", "data": part.redacted})
            else:
                blocks.append(
                    {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
                )
        elif isinstance(part, ir.ToolCall):
            block = {"type": "tool_use", "id": part.id, "name": part.name,
                     "input": _arguments(part.arguments)}  # fmt: skip
            if part.signature:
                block["signature"] = part.signature
            blocks.append(block)
    return blocks
