"""Provider usage → normalised `Usage` (input ⊇ cached, output ⊇ reasoning), and estimates."""

from __future__ import annotations

from typing import Any

import orjson

from api.gateway.pricing import Usage
from api.gateway.tokens import count_chat_prompt, count_text


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def from_openai(usage: dict[str, Any]) -> Usage:
    """OpenAI and DeepSeek chat usage: `prompt_tokens` already include cached tokens."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    cached = _int(prompt_details.get("cached_tokens")) or _int(usage.get("prompt_cache_hit_tokens"))
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        cached_input_tokens=cached,
        output_tokens=_int(usage.get("completion_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
    )


def _delta_text(chunk: bytes) -> str:
    try:
        parsed = orjson.loads(chunk)
    except orjson.JSONDecodeError:
        return ""
    parts: list[str] = []
    for choice in parsed.get("choices") or []:
        delta = choice.get("delta") or {}
        for name in ("content", "reasoning_content", "refusal"):
            if isinstance(delta.get(name), str):
                parts.append(delta[name])
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            parts += [
                v for v in (function.get("name"), function.get("arguments")) if isinstance(v, str)
            ]
    return "".join(parts)


def estimate_chat(body: dict[str, Any], produced_chunks: list[bytes]) -> Usage:
    """What a cut-off stream consumed: the prompt and the text relayed so far."""
    messages = body.get("messages")
    tools = body.get("tools")
    if not isinstance(messages, list):
        messages = []
    if not isinstance(tools, list):
        tools = None
    output = count_text("".join(_delta_text(chunk) for chunk in produced_chunks))
    return Usage(
        input_tokens=count_chat_prompt(messages, tools), output_tokens=output, estimated=True
    )
