"""The only place that sends requests: timeouts, retries, idempotency keys, errors."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from tollgate._errors import APIConnectionError, APITimeoutError, status_error

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
_INITIAL_DELAY, _MAX_DELAY = 0.5, 8.0


def should_retry(response: httpx.Response) -> bool:
    """The server's `x-should-retry` wins; otherwise 408, 409, 429 and 5xx are retried."""
    header: str | None = response.headers.get("x-should-retry")
    if header in ("true", "false"):
        return header == "true"
    return response.status_code in (408, 409, 429) or response.status_code >= 500


def retry_delay(attempt: int, response: httpx.Response | None) -> float:
    if response is not None:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = response.headers.get(name)
            if value is not None:
                try:
                    seconds = float(value) * scale
                except ValueError:
                    continue
                if 0 <= seconds <= 60:
                    return seconds
    delay = min(_INITIAL_DELAY * 2.0**attempt, _MAX_DELAY)
    return delay * (1 - 0.25 * random.random())


def _prepare(method: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(headers or {})
    if method == "POST":
        # One key for every attempt of this call, so a retried POST is applied once.
        out.setdefault("Idempotency-Key", f"tollgate-retry-{uuid.uuid4()}")
    return out


def _next_delay(
    attempt: int,
    max_retries: int,
    *,
    response: httpx.Response | None = None,
    error: httpx.TransportError | None = None,
) -> float:
    """How long to wait before the next attempt; raises when this outcome is final."""
    final = attempt >= max_retries
    if error is not None:
        if final:
            cls = (
                APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
            )
            message = "Request timed out." if cls is APITimeoutError else "Connection error."
            raise cls(message, request=error.request) from error
        return retry_delay(attempt, None)
    assert response is not None
    if final or not should_retry(response):
        raise status_error(response)
    return retry_delay(attempt, response)


class SyncHTTP:
    def __init__(self, client: httpx.Client, max_retries: int) -> None:
        self.client = client
        self.max_retries = max_retries

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent_headers = _prepare(method, headers)
        attempt = 0
        while True:
            try:
                response = self.client.request(
                    method, path, json=json, params=params, headers=sent_headers
                )
            except httpx.TransportError as exc:
                delay = _next_delay(attempt, self.max_retries, error=exc)
            else:
                if response.is_success:
                    return response.json()
                delay = _next_delay(attempt, self.max_retries, response=response)
            time.sleep(delay)
            attempt += 1


class AsyncHTTP:
    def __init__(self, client: httpx.AsyncClient, max_retries: int) -> None:
        self.client = client
        self.max_retries = max_retries

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent_headers = _prepare(method, headers)
        attempt = 0
        while True:
            try:
                response = await self.client.request(
                    method, path, json=json, params=params, headers=sent_headers
                )
            except httpx.TransportError as exc:
                delay = _next_delay(attempt, self.max_retries, error=exc)
            else:
                if response.is_success:
                    return response.json()
                delay = _next_delay(attempt, self.max_retries, response=response)
            await asyncio.sleep(delay)
            attempt += 1
