"""Google Gemini (Developer API): `POST {base}/v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, authenticated with `x-goog-api-key`.

Reference: https://ai.google.dev/api/generate-content, https://ai.google.dev/gemini-api/docs/troubleshooting.
`UpstreamRequest.path` is `api.gateway.translate.gemini.request_path(model, stream=…)`; bodies
are in Gemini's format (`dialect = "gemini"`). Streams are SSE only with `alt=sse` (added here
if missing), framed with CRLF.

Errors are `{"error":{"code","message","status","details":[…]}}`. A bad key is 400
INVALID_ARGUMENT with ErrorInfo `API_KEY_INVALID`: the gateway's credentials (502), not the
client's request. 429 RESOURCE_EXHAUSTED is RateLimited, its retry hint taken from the
`retry-after` header or else from RetryInfo `retryDelay` ("27s"); 503 UNAVAILABLE is
UpstreamUnavailable; other 4xx are relayed with the `status` as their code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from api.errors import AppError, RateLimited, UpstreamClientError, UpstreamError
from api.gateway.providers.base import UpstreamRequest, error_from_status
from api.gateway.providers.native import HTTPProvider
from api.kit.http1 import HTTPClient, Timeouts

_CREDENTIAL_REASONS = {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_EXPIRED"}


def _error(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def _details(error: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    return [
        d
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and str(d.get("@type", "")).endswith(kind)
    ]


def retry_delay_seconds(error: dict[str, Any]) -> int | None:
    """RetryInfo `retryDelay` (a protobuf Duration in JSON: "27s", "1.5s") in whole seconds."""
    for info in _details(error, "google.rpc.RetryInfo"):
        delay = info.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                seconds = float(delay[:-1])
            except ValueError:
                return None
            # "infs" and "nans" parse as floats: an upstream's nonsense is no hint at all.
            return math.ceil(seconds) if math.isfinite(seconds) and seconds >= 0 else None
    return None


class GeminiProvider(HTTPProvider):
    dialect = "gemini"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        client: HTTPClient,
        timeouts: Timeouts,
        stream_timeouts: Timeouts,
    ) -> None:
        headers = {"x-goog-api-key": api_key}
        super().__init__(name, base_url, headers, client, timeouts, stream_timeouts)

    def url(self, request: UpstreamRequest) -> str:
        url = super().url(request)
        if request.stream and "alt=sse" not in url:
            url += ("&" if "?" in url else "?") + "alt=sse"
        return url

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> AppError:
        error = _error(body)
        reasons = {d.get("reason") for d in _details(error, "google.rpc.ErrorInfo")}
        message = error.get("message") if isinstance(error.get("message"), str) else None
        if reasons & _CREDENTIAL_REASONS:
            error_from_status(self.name, 401, body, headers)  # logs it like any other
            return UpstreamError(f"The {self.name} provider refused the gateway's credentials.")
        if status == 429:
            retry_after = headers.get("retry-after")
            delay = retry_delay_seconds(error)
            if retry_after is None and delay is not None:
                retry_after = str(delay)
            return RateLimited(
                message or f"The {self.name} provider is rate limiting requests.",
                headers={"retry-after": retry_after} if retry_after else None,
            )
        mapped = error_from_status(self.name, status, body, headers)
        if isinstance(mapped, UpstreamClientError) and isinstance(error.get("status"), str):
            mapped.upstream_code = str(error["status"])[:64]
        return mapped
