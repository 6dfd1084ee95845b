"""The HTTP plumbing every provider adapter shares: one POST on the process's `HTTPClient`,
timeouts and broken connections mapped to the error tree, SSE streams opened only after the
status is checked. Each adapter supplies its auth headers, URL and error mapping; none of them
retries (`api/gateway/resilience.py` does)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import orjson

from api.errors import AppError, UpstreamError, UpstreamTimeout
from api.gateway.providers.base import UpstreamRequest, UpstreamResponse, error_from_status
from api.gateway.sse import SSEEvent, SSETooLarge, parse_sse
from api.kit import multipart
from api.kit.http1 import HTTPClient, HTTPClientError, Response, Timeouts

logger = logging.getLogger("tollgate.upstream")


class SSEStream:
    """An upstream's event stream. `release()` once its last event is read keeps the
    connection for the next request; `close()` drops it, which cancels generation upstream."""

    def __init__(self, response: Response, provider: str) -> None:
        self._response = response
        self._provider = provider

    async def events(self) -> AsyncIterator[SSEEvent]:
        try:
            async for event in parse_sse(self._response.chunks()):
                yield event
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self._provider} provider stopped sending.") from exc
        except (HTTPClientError, SSETooLarge) as exc:
            logger.warning("the %s stream broke off: %r", self._provider, exc)
            raise UpstreamError(f"The {self._provider} stream broke off.") from exc

    def rest(self) -> AsyncIterator[SSEEvent]:
        # The response keeps what was not read; an event cut in two by the interruption is lost.
        return self.events()

    def release(self) -> None:
        self._response.release_when_done()

    def close(self) -> None:
        self._response.close()


class Bytes:
    """An upstream's raw body as it arrives (audio); `release`/`close` as `SSEStream`'s."""

    def __init__(self, response: Response, provider: str) -> None:
        self._response = response
        self._provider = provider
        self.content_type = response.headers.get("content-type", "application/octet-stream")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.chunks():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self._provider} provider stopped sending.") from exc
        except HTTPClientError as exc:
            logger.warning("the %s body broke off: %r", self._provider, exc)
            raise UpstreamError(f"The {self._provider} answer broke off.") from exc

    def release(self) -> None:
        self._response.release_when_done()

    def close(self) -> None:
        self._response.close()


class HTTPProvider:
    name: str
    dialect: str

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        client: HTTPClient,
        timeouts: Timeouts,
        stream_timeouts: Timeouts,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._headers = {**headers, "Content-Type": "application/json"}
        self._stream_headers = {**self._headers, "Accept": "text/event-stream"}
        self._client = client
        self._timeouts = timeouts
        self._stream_timeouts = stream_timeouts

    def url(self, request: UpstreamRequest) -> str:
        return self._base_url + request.path

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> AppError:
        return error_from_status(self.name, status, body, headers)

    async def _post(self, request: UpstreamRequest) -> Response:
        headers = self._stream_headers if request.stream else self._headers
        if request.headers:
            headers = {**headers, **request.headers}
        if request.files:
            body, content_type = multipart.encode(request.body, request.files)
            headers = {**headers, "Content-Type": content_type}
        else:
            body = orjson.dumps(request.body)
        try:
            return await self._client.request(
                "POST",
                self.url(request),
                headers=headers,
                body=body,
                timeouts=self._stream_timeouts if request.stream else self._timeouts,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from exc
        except HTTPClientError as exc:
            logger.warning("could not reach %s: %r", self.name, exc)  # hosts stay out of replies
            raise UpstreamError(f"Could not reach the {self.name} provider.") from exc

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        response = await self._post(request)
        try:
            body = await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from exc
        except HTTPClientError as exc:
            logger.warning("the %s response broke off: %r", self.name, exc)
            raise UpstreamError(f"The {self.name} response broke off.") from exc
        finally:
            response.release()
        if response.status >= 400:
            raise self.error(response.status, body, response.headers)
        return UpstreamResponse(status=response.status, body=body, headers=response.headers)

    async def open_stream(self, request: UpstreamRequest) -> SSEStream:
        return SSEStream(await self._open(request), self.name)

    async def open_bytes(self, request: UpstreamRequest) -> Bytes:
        return Bytes(await self._open(request), self.name)

    async def _open(self, request: UpstreamRequest) -> Response:
        """The response, once its status says it succeeded (a failure raises, mapped)."""
        response = await self._post(request)
        if response.status >= 400:
            try:
                body = await response.read()
            except (HTTPClientError, TimeoutError):
                body = b""
            finally:
                response.release()
            raise self.error(response.status, body, response.headers)
        return response
