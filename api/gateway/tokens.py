"""Token counting with OpenAI's o200k vocabulary, for estimates only.

Billing uses the provider's reported usage. Counting is needed where there is none: a stream cut
off before its usage chunk, and the built-in mock provider. `bpe-openai` ships the vocabulary in
its wheel (tiktoken downloads it at run time, which an offline deployment cannot do).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# OpenAI's documented chat overhead: 3 tokens per message, 1 per name, 3 to prime the reply.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
_IMAGE_TOKENS = 85  # a low-detail image; the real count depends on size and detail


@lru_cache(maxsize=1)
def _encoding() -> Any:
    # Imported on first use: the vocabulary costs about 140 MB of memory, and the hot path
    # (reservations) never needs it; see `prompt_token_bound`.
    import bpe_openai  # type: ignore[import-untyped]  # the wheel ships no type information

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


# An image costs at most this many tokens in any provider's accounting we price (OpenAI's
# high-detail tiles top out near 1,500; Anthropic's cap is about 1,600; Gemini's is 258).
_IMAGE_TOKEN_BOUND = 2_000
_MESSAGE_OVERHEAD_BOUND = 16


def _text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string in `value`, images counted at their token bound."""
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_text_bytes(item) for item in value)
    if isinstance(value, dict):
        if value.get("type") in ("image_url", "input_image", "image"):
            return _IMAGE_TOKEN_BOUND
        return sum(_text_bytes(item) for item in value.values())
    return 0


def prompt_token_bound(messages: list[Any], tools: list[Any] | None = None) -> int:
    """An upper bound on the prompt's tokens under any tokenizer: no token is shorter than a
    byte. Caps reserve against this, so no provider's count can exceed what was held."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _MESSAGE_OVERHEAD_BOUND + _text_bytes(message)
    if tools:
        total += _text_bytes(tools) + _MESSAGE_OVERHEAD_BOUND * len(tools)
    return total
