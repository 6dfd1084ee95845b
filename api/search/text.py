"""What of a thread message is searchable: its text.

| block | searchable |
|---|---|
| `text` (user, assistant) | its text |
| `tool_result` (role `tool`) | its content (a string, or the text of its text blocks) |
| `tool_use`, `thinking`, `image`, anything else | nothing |

A message with nothing searchable (an assistant message that only called tools, an image on
its own) gets no vector; it counts as indexed all the same, so a thread can be fully indexed.
"""

from __future__ import annotations

from typing import Any


def message_text(content: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(_text(block.get("text")))
        elif kind == "tool_result":
            parts.append(_text(block.get("content")))
    return "\n".join(part for part in parts if part.strip()).strip()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(
            b["text"] for b in value if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""
