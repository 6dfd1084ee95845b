"""Provider usage → normalised `Usage` (input ⊇ cached, output ⊇ reasoning), and estimates."""

from __future__ import annotations

from typing import Any

import orjson

from api.gateway.pricing import Usage
from api.gateway.tokens import count_chat_prompt, count_text, prompt_token_bound


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


def _message_text(message: Any) -> list[str]:
    """The text of a chat message or stream delta, tool-call names and arguments included."""
    if not isinstance(message, dict):
        return []
    keys = ("content", "reasoning_content", "refusal")
    parts = [v for k in keys if isinstance(v := message.get(k), str)]
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts += [v for k in ("name", "arguments") if isinstance(v := function.get(k), str)]
    return parts


def _choices_text(payload: Any, field: str) -> str:
    choices = payload.get("choices") if isinstance(payload, dict) else None
    return "".join(
        text
        for choice in (choices if isinstance(choices, list) else [])
        if isinstance(choice, dict)
        for text in _message_text(choice.get(field))
    )


def delta_text(chunk: bytes) -> str:
    """The text a chat stream chunk carries (for estimating a cut-off stream)."""
    try:
        return _choices_text(orjson.loads(chunk), "delta")
    except orjson.JSONDecodeError:
        return ""


def prompt_bound(body: dict[str, Any]) -> int:
    """At least as many tokens as any provider will bill for this prompt (see tokens.py)."""
    messages = body.get("messages")
    tools = body.get("tools")
    return prompt_token_bound(
        messages if isinstance(messages, list) else [], tools if isinstance(tools, list) else None
    )


def prompt_tokens(body: dict[str, Any]) -> int:
    """The prompt's size as OpenAI counts it (an estimate for other providers' tokenizers)."""
    messages = body.get("messages")
    tools = body.get("tools")
    return count_chat_prompt(
        messages if isinstance(messages, list) else [], tools if isinstance(tools, list) else None
    )


def estimate_completion(body: dict[str, Any], payload: dict[str, Any]) -> Usage:
    """A non-streaming answer without usage (some compatible hosts): count what came back."""
    output = count_text(_choices_text(payload, "message"))
    return Usage(input_tokens=prompt_tokens(body), output_tokens=output, estimated=True)
