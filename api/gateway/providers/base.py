"""The provider interface and the mapping of upstream HTTP failures to our error tree.

A provider owns its URL, auth headers and error mapping; it does not retry (the pipeline
decides) and never matches on message text, only on status and documented error fields.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from api.errors import (
    AppError,
    QuotaExhausted,
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api.gateway.sse import SSEEvent
from api.kit.multipart import FilePart

logger = logging.getLogger("tollgate.upstream")


@dataclass(slots=True)
class UpstreamRequest:
    path: str
    body: dict[str, Any]
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    # Uploads: the body's fields (strings, or lists of them) and these files are sent as
    # multipart/form-data instead of JSON.
    files: list[FilePart] = field(default_factory=list)


class ByteStream(Protocol):
    """An upstream's body as it arrives (audio), not events."""

    content_type: str

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None:
        """Its last byte was read: the connection is kept for another request."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: dict[str, str]


class UpstreamStream(Protocol):
    def events(self) -> AsyncIterator[SSEEvent]: ...

    def rest(self) -> AsyncIterator[SSEEvent]:
        """The events not read yet, after a reader of `events()` was interrupted."""
        ...

    def release(self) -> None:
        """Its last event was read: the connection is kept for another request."""
        ...

    def close(self) -> None:
        """Stop it where it is (which cancels the generation upstream)."""
        ...


def done_with(stream: UpstreamStream, failure: BaseException | None) -> None:
    """A stream read to its end (an upstream's own error event included: the upstream ends
    the body after it) leaves its connection for the next request; one that broke on the
    gateway's side of it (`failure`) is closed."""
    if failure is None:
        stream.release()
    else:
        stream.close()


class Provider(Protocol):
    name: str
    dialect: str

    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def open_stream(self, request: UpstreamRequest) -> UpstreamStream:
        """Connect and check the status; a failure raises before any byte reaches the client."""
        ...

    async def open_bytes(self, request: UpstreamRequest) -> ByteStream:
        """`open_stream` for a body that is not events (speech audio)."""
        ...


# 4xx the client caused pass through; these mean something else (SPEC §6).
_NOT_THE_CLIENTS = {401, 403, 408, 429}


def error_from_status(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> AppError:
    """Map an upstream HTTP error to the error the client sees (SPEC §6)."""
    message, kind, code, param = _describe(body)
    logger.warning("upstream %s answered %s: %s", provider, status, body[:500])
    if 400 <= status < 500 and status not in _NOT_THE_CLIENTS:
        return UpstreamClientError(
            message or f"The provider rejected the request ({status}).",
            status=status, param=param, upstream_code=code or kind,
        )  # fmt: skip
    if status in (401, 403):
        return UpstreamError(f"The {provider} provider refused the gateway's credentials.")
    if status == 429 and "insufficient_quota" in (code, kind):
        return QuotaExhausted(message or f"The {provider} account has no quota left.")
    if status == 429:
        retry_after = headers.get("retry-after") or reset_hint(headers)
        return RateLimited(
            message or f"The {provider} provider is rate limiting requests.",
            headers={"retry-after": retry_after} if retry_after else None,
        )
    if status in (503, 529):
        return UpstreamUnavailable(f"The {provider} provider is overloaded ({status}).")
    if status in (408, 504):
        return UpstreamTimeout(f"The {provider} provider timed out ({status}).")
    return UpstreamError(f"The {provider} provider returned an error ({status}).")


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(value: str) -> float | None:
    """OpenAI's `x-ratelimit-reset-*` values: Go durations such as `120ms`, `2.174s`, `6m0s`."""
    parts = _GO_DURATION.findall(value)
    if not parts:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def reset_hint(headers: Mapping[str, str]) -> str | None:
    """A 429 without `retry-after`: when the exhausted window (`x-ratelimit-remaining-* = 0`)
    resets, in whole seconds, as a usage limit's reset time."""
    waits = []
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
            seconds = go_duration_seconds(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if seconds is not None:
                waits.append(seconds)
    return str(max(1, math.ceil(max(waits)))) if waits else None


def _describe(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None, None, None

    def text(name: str) -> str | None:
        value = error.get(name)
        return value if isinstance(value, str) else None

    return text("message"), text("type"), text("code"), text("param")
