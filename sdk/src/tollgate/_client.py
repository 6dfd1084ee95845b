from __future__ import annotations

import os
from functools import cached_property
from types import TracebackType

import httpx

from tollgate import __version__
from tollgate._errors import TollgateError
from tollgate._http import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncHTTP, SyncHTTP
from tollgate.resources.keys import AsyncKeys, Keys

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def _resolve(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    api_key = api_key or os.environ.get("TOLLGATE_API_KEY")
    if not api_key:
        raise TollgateError("Pass api_key= or set TOLLGATE_API_KEY.")
    return api_key, (base_url or os.environ.get("TOLLGATE_BASE_URL") or DEFAULT_BASE_URL)


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": f"tollgate-python/{__version__}"}


class Client:
    """Synchronous client. `http_client=` lets you bring your own `httpx.Client`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        api_key, base_url = _resolve(api_key, base_url)
        self._client = http_client or httpx.Client(timeout=timeout)
        self._client.base_url = httpx.URL(base_url)
        self._client.headers.update(_headers(api_key))
        self._http = SyncHTTP(self._client, max_retries)

    @cached_property
    def keys(self) -> Keys:
        return Keys(self._http)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """Asynchronous client. `http_client=` lets you bring your own `httpx.AsyncClient`."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        api_key, base_url = _resolve(api_key, base_url)
        self._client = http_client or httpx.AsyncClient(timeout=timeout)
        self._client.base_url = httpx.URL(base_url)
        self._client.headers.update(_headers(api_key))
        self._http = AsyncHTTP(self._client, max_retries)

    @cached_property
    def keys(self) -> AsyncKeys:
        return AsyncKeys(self._http)

    async def close(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
