"""The semantic cache (SPEC §5.10): a tenant's single-turn question answered with the stored
answer of one asked in other words.

It works on top of the exact response cache (`api/gateway/cache.py`), which keeps the answers;
this keeps their prompts' vectors, through search's embedding model and vector store
(`api.search.runtime.Search`: a collection of its own). A request is eligible when:

- it is one turn: one user message (a system prompt aside) of more than MIN_PROMPT characters,
  not streamed;
- its prompt holds nothing the shield's detectors call personal (an email, a phone or card
  number, a key): such a question is neither matched nor stored.

It matches only within its group: the same tenant, endpoint, model, system prompt, temperature
and every other field of the body (tools, max tokens, …); the user's words alone may differ,
by cosine similarity at or above the tenant's `threshold` (0.92 by default). An answer is
stored only if it is complete and at least MIN_ANSWER characters long. Each tenant keeps at
most its `max_entries` prompts: the oldest are evicted, and so are those whose answer expired.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from api.gateway.cache import CHAT, MESSAGES, RESPONSES

MIN_PROMPT = 30
MAX_PROMPT = 4_000  # longer questions are not embedded (a lookup's cost stays bounded)
MIN_ANSWER = 80
_IDENTITY = ("user", "metadata", "safety_identifier", "prompt_cache_key", "session_id", "stream")
_NAMESPACE = uuid.UUID("6f1c9a52-3e4b-4d8e-9a71-2b5c0d7e8f13")
_PREFIX = "tollgate:semantic:"


@dataclass(frozen=True, slots=True)
class SemanticSettings:
    threshold: float = 0.92
    max_entries: int = 10_000


class PromptIndex(Protocol):
    """The vector side (`api.search.runtime.Search`)."""

    async def nearest_prompt(
        self, text: str, tenant_id: uuid.UUID, group: str, threshold: float
    ) -> Any: ...

    async def remember_prompt(
        self, text: str, point_id: uuid.UUID, tenant_id: uuid.UUID, group: str
    ) -> None: ...

    async def forget_prompts(self, ids: list[uuid.UUID]) -> None: ...


@dataclass(frozen=True, slots=True)
class Question:
    """A request's one question and the group it may be matched within."""

    text: str
    group: str


def question(tenant_id: str, path: str, model: str, body: dict[str, Any]) -> Question | None:
    """The request's single-turn question, or None when it is not eligible."""
    if body.get("stream"):
        return None
    found = _question_text(path, body)
    if found is None:
        return None
    text, rest = found
    if not MIN_PROMPT < len(text) <= MAX_PROMPT or personal(text):
        return None
    context = {k: v for k, v in rest.items() if k not in _IDENTITY}
    material = orjson.dumps([tenant_id, path, model, context], option=orjson.OPT_SORT_KEYS)
    return Question(text, hashlib.sha256(material).hexdigest())


def _question_text(path: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The user's words, and the body without them (the group's context)."""
    if path in (CHAT, MESSAGES):
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        others = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
        if len(users) != 1 or len(users) + len(others) != len(messages):
            return None
        text = _text(users[0].get("content"))
        if text is None:
            return None
        return text, {**body, "messages": others}
    if path == RESPONSES:
        given = body.get("input")
        if isinstance(given, str):
            return given, {**body, "input": None}
        if (
            isinstance(given, list)
            and len(given) == 1
            and isinstance(given[0], dict)
            and given[0].get("role") == "user"
        ):
            text = _text(given[0].get("content"))
            return (text, {**body, "input": None}) if text is not None else None
    return None


def _text(content: Any) -> str | None:
    """Text content, or text parts only (an image makes it not a text question)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            return None
        parts.append(part["text"])
    return "\n".join(parts)


def answer_text(path: str, data: bytes) -> str:
    """The words of a stored answer (to keep only answers of some length)."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(answer, dict):
        return ""
    if path == CHAT:
        choices = answer.get("choices") or [{}]
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""
    blocks = answer.get("content") if path == MESSAGES else None
    if path == RESPONSES:
        blocks = [
            part
            for item in answer.get("output") or []
            if isinstance(item, dict)
            for part in item.get("content") or []
        ]
    return "".join(
        str(block.get("text", ""))
        for block in blocks or []
        if isinstance(block, dict) and block.get("type") in ("text", "output_text")
    )


def personal(text: str) -> bool:
    """Whether the shield's built-in detectors find anything in `text` (a detector that runs
    out of time counts as a find: such a question is not cached)."""
    from api.shield import presets

    for preset in presets.PRESETS:
        if preset.hints and not any(hint in text for hint in preset.hints):
            continue
        try:
            for match in presets.compiled(preset.name).finditer(text, timeout=0.05):
                if preset.check is None or preset.check(match.group(0)):
                    return True
        except TimeoutError:
            return True
    return False


def point_id(exact_key: str) -> uuid.UUID:
    """A prompt's point: named by its answer's exact key."""
    return uuid.uuid5(_NAMESPACE, exact_key)


class Entries(Protocol):
    """Each tenant's prompts in the index, oldest first, with the answer each points to."""

    async def add(
        self, tenant_id: str, point: uuid.UUID, exact_key: str, ttl: int, budget: int
    ) -> list[uuid.UUID]:
        """Keep `point`; returns the points evicted (expired, or past the tenant's budget)."""
        ...

    async def answer_key(self, point: uuid.UUID) -> str | None:
        """The exact key of the answer a point names, while it lives."""
        ...


@dataclass(slots=True)
class MemoryEntries:
    _tenants: dict[str, OrderedDict[uuid.UUID, float]] = field(default_factory=dict)
    _keys: dict[uuid.UUID, tuple[str, float]] = field(default_factory=dict)

    async def add(
        self, tenant_id: str, point: uuid.UUID, exact_key: str, ttl: int, budget: int
    ) -> list[uuid.UUID]:
        now = time.monotonic()
        points = self._tenants.setdefault(tenant_id, OrderedDict())
        points.pop(point, None)
        points[point] = now + ttl
        self._keys[point] = (exact_key, now + ttl)
        evicted = [p for p, expires in points.items() if expires <= now]
        overflow = len(points) - len(evicted) - budget
        if overflow > 0:
            evicted += [p for p in points if p not in evicted][:overflow]
        for gone in evicted:
            points.pop(gone, None)
            self._keys.pop(gone, None)
        return evicted

    async def answer_key(self, point: uuid.UUID) -> str | None:
        found = self._keys.get(point)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]


class RedisEntries:
    """A sorted set of points per tenant (scored by expiry) and a key per point, in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def add(
        self, tenant_id: str, point: uuid.UUID, exact_key: str, ttl: int, budget: int
    ) -> list[uuid.UUID]:
        now = time.time()
        tenant = f"{_PREFIX}tenant:{tenant_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{_PREFIX}point:{point}", exact_key, ex=ttl)
            pipe.zadd(tenant, {str(point): now + ttl})
            pipe.zrangebyscore(tenant, "-inf", now)
            pipe.zremrangebyscore(tenant, "-inf", now)
            pipe.zcard(tenant)
            _, _, expired, _, count = await pipe.execute()
        evicted = [_uuid(raw) for raw in expired]
        if count > budget:
            popped = [_uuid(raw) for raw, _ in await self._redis.zpopmin(tenant, count - budget)]
            if popped:
                await self._redis.delete(*(f"{_PREFIX}point:{gone}" for gone in popped))
            evicted += popped
        return evicted

    async def answer_key(self, point: uuid.UUID) -> str | None:
        found = await self._redis.get(f"{_PREFIX}point:{point}")
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)


def _uuid(raw: bytes | str) -> uuid.UUID:
    return uuid.UUID(raw.decode() if isinstance(raw, bytes) else raw)
