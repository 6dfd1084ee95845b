"""The only place that sends requests: authentication, timeouts, retries, idempotency keys,
and error statuses turned into exceptions.

Retries (at most `max_retries`, 2 by default) follow the official SDKs: a connection error, a
timeout, 408, 409, 429 and 5xx are tried again after 0.5, 1, 2 … 8 s (less up to a quarter, at
random), or after what `retry-after-ms` / `retry-after` say (up to 60 s). An `x-should-retry`
header from Tollgate overrides the status either way.

Every POST carries an `Idempotency-Key`, the same on each of its attempts; Tollgate answers a
repeated key with the first answer on the routes where a repeat would do something twice
(`POST /v1/keys`, `POST /v1/jobs`, `POST /v1/threads/{id}/messages`), so those, and every
GET, PUT, PATCH and DELETE, are retried even when a response was lost on the way back. A POST
Tollgate does not deduplicate is retried only when it surely never reached the server (the
connection was refused, or never made), so a lost answer is never a second thread or tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tollgate._errors import APIConnectionError, APITimeoutError, status_error
from tollgate._types import NOT_GIVEN, NotGiven, Timeout
from tollgate._version import __version__

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
_INITIAL_DELAY, _MAX_DELAY, _MAX_RETRY_AFTER = 0.5, 8.0, 60.0
# Errors raised before a request's first byte could leave: safe to retry any request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def should_retry(response: httpx.Response) -> bool:
    """The server's `x-should-retry` wins; otherwise 408, 409, 429 and 5xx are retried."""
    header: str | None = response.headers.get("x-should-retry")
    if header in ("true", "false"):
        return header == "true"
    return response.status_code in (408, 409, 429) or response.status_code >= 500


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    """Seconds to wait before retry number `attempt + 1`."""
    if response is not None:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = response.headers.get(name)
            if value is None:
                continue
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if 0 <= seconds <= _MAX_RETRY_AFTER:
                return seconds
    delay = min(_INITIAL_DELAY * 2.0**attempt, _MAX_DELAY)
    return delay * (1 - 0.25 * random.random())


def segment(value: str) -> str:
    """An id as one path segment, whatever it contains."""
    return quote(value, safe="")


@dataclass(frozen=True)
class Call:
    """One API call, as resources describe it; sent by `SyncHTTP` or `AsyncHTTP`."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    # Whether a repeat is harmless even if the first attempt was carried out.
    idempotent: bool = True
    idempotency_key: str | NotGiven = NOT_GIVEN
    headers: Mapping[str, str] = field(default_factory=dict)
    cursor_param: str = "cursor"  # where a list's next page is asked for


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, NotGiven) or value is None:
            continue
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        out[name] = value
    return out


@dataclass
class _Attempts:
    """The retry state of one call: what to do after each outcome."""

    call: Call
    max_retries: int
    attempt: int = 0

    def after_error(self, error: httpx.TransportError) -> float:
        """The delay before the next attempt, or raises the error to give up with."""
        sent = not isinstance(error, _NOT_SENT)
        if self.attempt >= self.max_retries or (sent and not self.call.idempotent):
            if isinstance(error, httpx.TimeoutException):
                raise APITimeoutError(error.request) from error
            raise APIConnectionError(request=error.request) from error
        self.attempt += 1
        return retry_delay(self.attempt - 1, None)

    def after_response(self, response: httpx.Response) -> float | None:
        """None when the response is the answer; else the delay before the next attempt."""
        if response.is_success:
            return None
        if self.attempt >= self.max_retries or not should_retry(response):
            raise status_error(response)
        self.attempt += 1
        return retry_delay(self.attempt - 1, response)


class _Base:
    def __init__(self, *, api_key: str, base_url: str, max_retries: int, timeout: Timeout) -> None:
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout = timeout

    def _build(self, client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": f"tollgate-python/{__version__}",
            "Accept": "application/json",
            **call.headers,
        }
        if call.method == "POST":
            key = call.idempotency_key
            headers["Idempotency-Key"] = (
                key if isinstance(key, str) else f"tollgate-python-{uuid.uuid4()}"
            )
        return client.build_request(
            call.method,
            self.base_url + call.path,
            json=call.json,
            params=_query(call.params),
            headers=headers,
            timeout=self.timeout,
        )


class SyncHTTP(_Base):
    def __init__(self, client: httpx.Client, **options: Any) -> None:
        super().__init__(**options)
        self.client = client

    def _send(self, call: Call, *, stream: bool) -> httpx.Response:
        request = self._build(self.client, call)  # one Idempotency-Key for every attempt
        attempts = _Attempts(call, self.max_retries)
        while True:
            try:
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as error:
                delay = attempts.after_error(error)
            else:
                try:
                    if stream and not response.is_success:
                        response.read()
                    delay_after = attempts.after_response(response)
                except BaseException:
                    response.close()
                    raise
                if delay_after is None:
                    return response
                response.close()
                delay = delay_after
            time.sleep(delay)

    def request(self, call: Call) -> Any:
        """The decoded JSON answer."""
        return self._send(call, stream=False).json()

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[httpx.Response]:
        """The successful response, its body not read yet (retried only before that)."""
        response = self._send(call, stream=True)
        try:
            yield response
        finally:
            response.close()


class AsyncHTTP(_Base):
    def __init__(self, client: httpx.AsyncClient, **options: Any) -> None:
        super().__init__(**options)
        self.client = client

    async def _send(self, call: Call, *, stream: bool) -> httpx.Response:
        request = self._build(self.client, call)
        attempts = _Attempts(call, self.max_retries)
        while True:
            try:
                response = await self.client.send(request, stream=stream)
            except httpx.TransportError as error:
                delay = attempts.after_error(error)
            else:
                try:
                    if stream and not response.is_success:
                        await response.aread()
                    delay_after = attempts.after_response(response)
                except BaseException:
                    await response.aclose()
                    raise
                if delay_after is None:
                    return response
                await response.aclose()
                delay = delay_after
            await asyncio.sleep(delay)

    async def request(self, call: Call) -> Any:
        return (await self._send(call, stream=False)).json()

    @contextlib.asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[httpx.Response]:
        response = await self._send(call, stream=True)
        try:
            yield response
        finally:
            await response.aclose()
