"""Anthropic Messages: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version`.

Reference: https://docs.anthropic.com/en/api/messages, https://docs.anthropic.com/en/api/errors
(version header pinned to 2023-06-01). Requests and answers are in Anthropic's own format
(`dialect = "anthropic"`): the pipeline translates with `api.gateway.translate.anthropic`. An
`anthropic-beta` header in `UpstreamRequest.headers` is forwarded as given.

Errors are `{"type":"error","error":{"type","message"}}`: `overloaded_error` (529) is
UpstreamUnavailable, `rate_limit_error` (429) RateLimited with the `retry-after` header,
`authentication_error` / `permission_error` the gateway's own credentials (502), other 4xx the
client's (relayed), 5xx UpstreamError.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from api.errors import AppError, UpstreamUnavailable
from api.gateway.providers.base import error_from_status
from api.gateway.providers.native import HTTPProvider
from api.kit.http1 import HTTPClient, Timeouts

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"


def _error_type(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


class AnthropicProvider(HTTPProvider):
    dialect = "anthropic"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        client: HTTPClient,
        timeouts: Timeouts,
        stream_timeouts: Timeouts,
    ) -> None:
        headers = {"x-api-key": api_key, "anthropic-version": API_VERSION}
        super().__init__(name, base_url, headers, client, timeouts, stream_timeouts)

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> AppError:
        if _error_type(body) == "overloaded_error":  # documented as 529, seen in 5xx bodies too
            return UpstreamUnavailable(f"The {self.name} provider is overloaded ({status}).")
        return error_from_status(self.name, status, body, headers)
