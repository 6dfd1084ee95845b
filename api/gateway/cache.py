"""The exact response cache (SPEC §5.10): a tenant's identical requests answered from a stored
answer, without reaching the provider.

The key is a SHA-256 over the tenant, the endpoint, the resolved model, whether the answer
streams, and the whole body less the fields that only identify the caller (`user`,
`metadata`, …): messages or input, tools, temperature, top_p, max tokens and every other
generation parameter. Answers are stored as the client received them: a JSON body, or a
stream's bytes (a streamed request is replayed as the stream it was, well formed in its own
family). Only complete answers are stored: status 200, not cut off by a token limit, not
failed, not an error event; and at most MAX_ENTRY_BYTES.

Chat Completions, Messages and Responses are cached; a Responses request that keeps state
(stored responses, `previous_response_id`, a conversation, background runs) is not, since an
answer from the cache would skip what it stores. `Cache-Control: no-cache` (or `no-store`)
bypasses the cache; a request sampled above the tenant's `max_temperature` is not cached.

Stores: Redis in production (`SET … EX`, shared by every process), a bounded in-process LRU in
the embedded default.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from api.gateway.pricing import Usage
from api.gateway.routing import CacheSettings

MAX_ENTRY_BYTES = 1 << 20
_PREFIX = "tollgate:cache:"
CHAT, MESSAGES, RESPONSES = "/v1/chat/completions", "/v1/messages", "/v1/responses"
CACHEABLE = (CHAT, MESSAGES, RESPONSES)
# Fields that say who asks, not what: the same question from two users is one entry.
_IDENTITY = ("user", "metadata", "safety_identifier", "prompt_cache_key", "session_id")
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))
_ANSWER_HEADERS = ("anthropic-beta", "anthropic-version")
_FINISHED = {CHAT: (b"stop", b"tool_calls"), MESSAGES: (b"end_turn", b"stop_sequence", b"tool_use")}
_REASONS = {
    CHAT: re.compile(rb'"finish_reason":\s*"([a-z_]+)"'),
    MESSAGES: re.compile(rb'"stop_reason":\s*"([a-z_]+)"'),
}


class Store(Protocol):
    async def get(self, key: str) -> tuple[bytes, int] | None:
        """The stored value and the seconds it has left, or None."""
        ...

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None: ...


@dataclass(slots=True)
class MemoryStore:
    """A bounded LRU in this process (the embedded default)."""

    max_entries: int = 10_000
    max_bytes: int = 64 << 20
    _items: OrderedDict[str, tuple[bytes, float]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    async def get(self, key: str) -> tuple[bytes, int] | None:
        found = self._items.get(key)
        if found is None:
            return None
        value, expires = found
        left = expires - time.monotonic()
        if left <= 0:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return value, max(int(left), 1)

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self._drop(key)
        self._items[key] = (value, time.monotonic() + ttl_seconds)
        self._bytes += len(value)
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: str) -> None:
        found = self._items.pop(key, None)
        if found is not None:
            self._bytes -= len(found[0])


class RedisStore:
    """Entries in Redis with their TTL, shared by every API process."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get(self, key: str) -> tuple[bytes, int] | None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(_PREFIX + key)
            pipe.ttl(_PREFIX + key)
            value, ttl = await pipe.execute()
        if value is None:
            return None
        return bytes(value), max(int(ttl), 1)

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self._redis.set(_PREFIX + key, value, ex=ttl_seconds)


@dataclass(slots=True)
class Lookup:
    """What the cache says of one request: a key to look up and store under, or why not."""

    settings: CacheSettings
    key: str | None = None
    skip: str | None = None  # why the request is not cached (X-Cache-Skip-Reason)
    # The semantic cache's view (`api/gateway/semantic.py`), when the tenant has it on and the
    # request is eligible; and its settings.
    question: Any = None
    semantic: Any = None


@dataclass(frozen=True, slots=True)
class Hit:
    body: bytes
    stream: bool
    provider: str
    usage: Usage  # what the stored answer cost upstream
    ttl_left: int


def lookup(
    settings: CacheSettings | None,
    tenant_id: str,
    path: str,
    model: str,
    body: dict[str, Any],
    headers: Any,
    stream: bool,
) -> Lookup | None:
    """None when the tenant's cache is off; otherwise the key, or why this one is skipped."""
    if settings is None:
        return None
    found = Lookup(settings)
    control = str(headers.get("cache-control") or "").lower() if headers is not None else ""
    if path not in CACHEABLE:
        found.skip = "endpoint"
    elif "no-cache" in control or "no-store" in control:
        found.skip = "no-cache"
    elif path == RESPONSES and (
        body.get("store") is not False
        or any(body.get(name) for name in ("previous_response_id", "conversation", "background"))
    ):
        found.skip = "stateful"
    elif _temperature(body) > settings.max_temperature:
        found.skip = "temperature"
    else:
        asked = {k: v for k, v in body.items() if k not in _IDENTITY and k != "stream"}
        # Headers that change the answer (Anthropic's betas and API version) are part of it.
        said = [str(headers.get(name) or "") for name in _ANSWER_HEADERS] if headers else []
        material = orjson.dumps(
            [tenant_id, path, model, stream, asked, said], option=orjson.OPT_SORT_KEYS
        )
        found.key = hashlib.sha256(material).hexdigest()
    return found


def _temperature(body: dict[str, Any]) -> float:
    value = body.get("temperature")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 1.0  # every provider's default


async def fetch(store: Store, key: str) -> Hit | None:
    found = await store.get(key)
    if found is None:
        return None
    value, ttl_left = found
    head, _, body = value.partition(b"\n")
    try:
        meta = orjson.loads(head)
        usage = Usage(**{k: v for k, v in meta["usage"].items() if k in _USAGE_FIELDS})
        return Hit(body, bool(meta["stream"]), str(meta["provider"]), usage, ttl_left)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # written by another version: a miss


async def keep(
    store: Store, key: str, ttl: int, body: bytes, stream: bool, provider: str, usage: Usage
) -> None:
    meta = {"stream": stream, "provider": provider, "usage": _usage_json(usage)}
    await store.put(key, orjson.dumps(meta) + b"\n" + body, ttl)


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {name: getattr(usage, name) for name in _USAGE_FIELDS}


def complete(path: str, stream: bool, data: bytes) -> bool:
    """Whether an answer is whole and successful, so that it may be served again."""
    if len(data) > MAX_ENTRY_BYTES:
        return False
    if stream:
        return _complete_stream(path, data)
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(answer, dict):
        return False
    if path == CHAT:
        choices = answer.get("choices")
        return (
            isinstance(choices, list)
            and bool(choices)
            and all(
                isinstance(c, dict) and c.get("finish_reason") in ("stop", "tool_calls")
                for c in choices
            )
        )
    if path == MESSAGES:
        return answer.get("type") == "message" and answer.get("stop_reason") in (
            "end_turn", "stop_sequence", "tool_use",
        )  # fmt: skip
    return answer.get("status") == "completed"


def _complete_stream(path: str, data: bytes) -> bool:
    """A stream that reached its end marker, with no error, and every answer in it finished
    for a reason the plain answers are kept for (not a token limit, a refusal, a pause)."""
    if path == RESPONSES:
        return b"event: response.completed" in data and b"event: error" not in data
    if path == CHAT:
        ended = data.rstrip().endswith(b"data: [DONE]") and b'"error"' not in data
    else:
        ended = b"event: message_stop" in data and b"event: error" not in data
    reasons = _REASONS[path].findall(data)
    return ended and bool(reasons) and all(reason in _FINISHED[path] for reason in reasons)


async def recorded(
    chunks: AsyncGenerator[bytes, None], then: Callable[[bytes], Coroutine[Any, Any, None]]
) -> AsyncGenerator[bytes, None]:
    """`chunks` as they come; once they end, `then(data)` with all of them (not if over
    MAX_ENTRY_BYTES). Closing this closes `chunks` (their relay meters what was cut off)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            if size <= MAX_ENTRY_BYTES:
                parts.append(chunk)
                size += len(chunk)
            yield chunk
    finally:
        await chunks.aclose()
    if size <= MAX_ENTRY_BYTES:  # stored beside the stream's end, which need not wait for it
        task = asyncio.get_running_loop().create_task(then(b"".join(parts)))
        _storing.add(task)
        task.add_done_callback(_storing.discard)


_storing: set[asyncio.Task[None]] = set()  # answers being stored (kept from collection)


async def replay(data: bytes) -> AsyncGenerator[bytes, None]:
    """A stored stream, event by event."""
    for event in data.split(b"\n\n"):
        if event.strip():
            yield event + b"\n\n"
