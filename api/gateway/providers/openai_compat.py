"""OpenAI-compatible upstreams: OpenAI itself, DeepSeek, and any host speaking Chat Completions.

Reference: https://platform.openai.com/docs/api-reference/chat (Authorization: Bearer),
https://api-docs.deepseek.com/ (same shape; `: keep-alive` comments, usage on the finish chunk).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from api.errors import UpstreamError, UpstreamTimeout
from api.gateway.providers.base import (
    UpstreamRequest,
    UpstreamResponse,
    error_from_status,
)
from api.gateway.sse import SSEEvent, parse_sse

logger = logging.getLogger("tollgate.upstream")


class OpenAICompatStream:
    def __init__(self, response: aiohttp.ClientResponse, provider: str) -> None:
        self._response = response
        self._provider = provider

    async def events(self) -> AsyncIterator[SSEEvent]:
        try:
            async for event in parse_sse(self._response.content.iter_any()):
                yield event
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self._provider} provider stopped sending.") from exc
        except (aiohttp.ClientError, HttpProcessingError, ValueError) as exc:
            # ValueError and HttpProcessingError: a line beyond aiohttp's limit, bad framing.
            logger.warning("the %s stream broke off: %r", self._provider, exc)
            raise UpstreamError(f"The {self._provider} stream broke off.") from exc

    def close(self) -> None:
        # Closing (not releasing) drops the connection, which cancels generation upstream.
        self._response.close()


class OpenAICompatProvider:
    dialect = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout,
        stream_timeout: aiohttp.ClientTimeout,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._session = session
        self._timeout = timeout
        self._stream_timeout = stream_timeout

    async def _post(self, request: UpstreamRequest) -> aiohttp.ClientResponse:
        headers = {**self._headers, **request.headers}
        if request.stream:
            headers["Accept"] = "text/event-stream"
        try:
            return await self._session.post(
                self._base_url + request.path,
                data=orjson.dumps(request.body),
                headers=headers,
                timeout=self._stream_timeout if request.stream else self._timeout,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            logger.warning("could not reach %s: %r", self.name, exc)  # hosts stay out of replies
            raise UpstreamError(f"Could not reach the {self.name} provider.") from exc

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        response = await self._post(request)
        try:
            body = await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            logger.warning("the %s response broke off: %r", self.name, exc)
            raise UpstreamError(f"The {self.name} response broke off.") from exc
        finally:
            response.release()
        if response.status >= 400:
            raise error_from_status(self.name, response.status, body, response.headers)
        return UpstreamResponse(status=response.status, body=body, headers=dict(response.headers))

    async def open_stream(self, request: UpstreamRequest) -> OpenAICompatStream:
        response = await self._post(request)
        if response.status >= 400:
            try:
                body = await response.read()
            except aiohttp.ClientError:
                body = b""
            finally:
                response.release()
            raise error_from_status(self.name, response.status, body, response.headers)
        return OpenAICompatStream(response, self.name)
