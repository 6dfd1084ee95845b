"""Running one tool call: the signed POST to the tool's webhook (SPEC §5.5), with retries.

This is the job function `tool.call_webhook`: the API enqueues it and awaits its result through
the job queue (`api.kit.jobs`); `tollgate worker` runs it, or the API process itself. It never
raises for the webhook's failures: a timeout, a 5xx after its retries, an answer that is not
`{"content": …, "is_error"?: bool}` all become an error result the model reads. Its idempotency
key is the tool call's id, sent as `Idempotency-Key` for the receiver to deduplicate retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.background import Task
from api.kit.crypto import SecretBox
from api.kit.webhook_client import refused
from api.kit.webhooks import ResponseTooLarge, call_signed
from api.tool.repository import get_unscoped
from api.tool.validation import check_input

logger = logging.getLogger("tollgate.tools")

JOB_NAME = "tool.call_webhook"
ATTEMPTS = 3
BACKOFF_SECONDS = (0.2, 0.8)
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_CONTENT_CHARS = 256 * 1024  # what the model is fed back; the rest is cut
_RETRYABLE_STATUSES = {408, 425, 429}


def await_bound_seconds(timeout_ms: int) -> float:
    """How long the turn waits for a job: every attempt, the backoff between, and slack for
    a busy queue. Past it the call is reported as timed out, so a turn never hangs."""
    return ATTEMPTS * timeout_ms / 1000 + sum(BACKOFF_SECONDS) + 10.0


@dataclass(slots=True)
class ToolRunner:
    """`client` comes from `create_webhook_client`: its connections refuse private addresses
    (unless allowed), checked as each connection is made, whatever the name resolved to before."""

    sessionmaker: async_sessionmaker[AsyncSession]
    client: httpx.AsyncClient
    box: SecretBox
    # Schema checks at once (api/tool/validation.py): each holds a thread or a child process.
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))

    async def call(self, tool_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        async with self.sessionmaker() as session:
            tool = await get_unscoped(session, uuid.UUID(tool_id))
        if tool is None or str(tool.tenant_id) != payload.get("tenant_id"):
            return _result("The tool was deleted.", True, 0, started)
        refusal = await check_input(tool.input_schema, payload["input"], self.limiter)
        if refusal is not None:
            return _result(refusal, True, 0, started)
        body = orjson.dumps({
            "tool_call_id": payload["tool_call_id"], "tool": tool.name, "input": payload["input"],
            "thread_id": payload["thread_id"], "key_id": payload["key_id"],
        })  # fmt: skip
        secret = self.box.open(tool.signing_secret)
        timeout = tool.timeout_ms / 1000
        failure = "The tool call failed."
        for attempt in range(1, ATTEMPTS + 1):
            if attempt > 1:
                await asyncio.sleep(BACKOFF_SECONDS[attempt - 2])
            outcome = await self._attempt(tool.webhook_url, secret, body, timeout, payload)
            if isinstance(outcome, dict):
                return {**outcome, "attempts": attempt, "latency_ms": _ms(started)}
            retry, failure = outcome
            if not retry:
                return _result(failure, True, attempt, started)
        return _result(failure, True, ATTEMPTS, started)

    async def _attempt(
        self, url: str, secret: str, body: bytes, seconds: float, payload: dict[str, Any]
    ) -> dict[str, Any] | tuple[bool, str]:
        """The webhook's answer as a result, or (worth retrying, why it failed)."""
        try:
            async with asyncio.timeout(seconds):
                status, raw = await call_signed(
                    self.client, url, secret, body, timeout_seconds=seconds,
                    idempotency_key=str(payload["tool_call_id"]),
                    max_response_bytes=MAX_RESPONSE_BYTES,
                )  # fmt: skip
        except httpx.InvalidURL:
            return False, "The tool's webhook URL is refused: it is not a valid URL."
        except (TimeoutError, httpx.TimeoutException):
            return True, f"The tool did not answer within {seconds:g} s."
        except ResponseTooLarge:
            return False, "The tool's answer is larger than 1 MiB."
        except httpx.HTTPError as exc:
            if refused(exc):
                return False, "The tool's webhook host resolves to a private or loopback address."
            logger.info("tool webhook %s unreachable: %r", url, exc)
            return True, "The tool's webhook could not be reached."
        if status >= 500 or status in _RETRYABLE_STATUSES:
            return True, f"The tool's webhook answered {status}."
        if not 200 <= status < 300:
            return False, f"The tool's webhook answered {status}."
        return _parse(raw)


def _parse(raw: bytes) -> dict[str, Any] | tuple[bool, str]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, "The tool's answer is not valid JSON."
    if not isinstance(answer, dict) or "content" not in answer:
        return False, 'The tool\'s answer is not {"content": …, "is_error"?: bool}.'
    content = answer["content"]
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in content
    ):
        text = "".join(b["text"] for b in content)
    elif isinstance(content, str):
        text = content
    else:  # any other JSON value is fed back as JSON
        text = orjson.dumps(content).decode()
    return {"content": text[:MAX_CONTENT_CHARS], "is_error": answer.get("is_error") is True}


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _result(message: str, is_error: bool, attempts: int, started: float) -> dict[str, Any]:
    return {"content": message, "is_error": is_error, "attempts": attempts,
            "latency_ms": _ms(started)}  # fmt: skip


async def call_webhook(
    ctx: dict[str, Any], tool_id: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """The job function (`JOB_NAME`); `ctx["tool_runner"]` is built at start-up."""
    runner: ToolRunner = ctx["tool_runner"]
    return await runner.call(tool_id, payload)


# The longest a call can take: every attempt at the largest `timeout_ms` a tool may have.
TASK = Task(
    JOB_NAME, call_webhook, timeout_seconds=ATTEMPTS * 300 + sum(BACKOFF_SECONDS) + 30, max_tries=3
)
