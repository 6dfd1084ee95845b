"""The HTTP plumbing the native-format providers (Anthropic, Gemini) share: one POST on the
shared aiohttp session, timeouts and broken connections mapped to the error tree, SSE streams
opened only after the status is checked. Each provider supplies its auth headers, URL and error
mapping; none of them retries."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp
import orjson

from api.errors import AppError, UpstreamError, UpstreamTimeout
from api.gateway.providers.base import UpstreamRequest, UpstreamResponse
from api.gateway.providers.openai_compat import OpenAICompatStream

logger = logging.getLogger("tollgate.upstream")


class NativeHTTPProvider:
    name: str
    dialect: str

    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        session: aiohttp.ClientSession,
        timeout: aiohttp.ClientTimeout,
        stream_timeout: aiohttp.ClientTimeout,
    ) -> None:
        self.name = name
        self._base_url = base_url.rstrip("/")
        self._headers = {**headers, "Content-Type": "application/json"}
        self._session = session
        self._timeout = timeout
        self._stream_timeout = stream_timeout

    def url(self, request: UpstreamRequest) -> str:
        return self._base_url + request.path

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> AppError:
        raise NotImplementedError

    async def _post(self, request: UpstreamRequest) -> aiohttp.ClientResponse:
        headers = {**self._headers, **request.headers}
        if request.stream:
            headers["Accept"] = "text/event-stream"
        try:
            return await self._session.post(
                self.url(request),
                data=orjson.dumps(request.body),
                headers=headers,
                timeout=self._stream_timeout if request.stream else self._timeout,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from exc
        except aiohttp.ClientError as exc:
            logger.warning("could not reach %s: %r", self.name, exc)
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
            raise self.error(response.status, body, response.headers)
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
            raise self.error(response.status, body, response.headers)
        return OpenAICompatStream(response, self.name)
