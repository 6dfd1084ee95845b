"""`Tollgate` and `AsyncTollgate`: the clients, one resource per attribute."""

from __future__ import annotations

import os
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from tollgate._errors import TollgateError
from tollgate._http import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, AsyncHTTP, SyncHTTP
from tollgate._types import NOT_GIVEN, NotGiven, Timeout
from tollgate.resources.billing import AsyncBilling, Billing
from tollgate.resources.conversations import AsyncConversations, Conversations
from tollgate.resources.jobs import AsyncJobs, Jobs
from tollgate.resources.keys import AsyncKeys, Keys
from tollgate.resources.providers import AsyncProviders, Providers
from tollgate.resources.responses import AsyncResponses, Responses
from tollgate.resources.search import AsyncSearch, Search
from tollgate.resources.settings import Alerts, AsyncAlerts, AsyncSettings, Settings
from tollgate.resources.threads import AsyncThreads, Threads
from tollgate.resources.tools import AsyncTools, Tools
from tollgate.resources.usage import AsyncLogs, AsyncUsageReports, Logs, UsageReports

if TYPE_CHECKING:  # the official SDKs are optional extras
    import anthropic as _anthropic
    import openai as _openai

DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def _resolve(api_key: str | None, base_url: str | None) -> tuple[str, str]:
    api_key = api_key or os.environ.get("TOLLGATE_API_KEY")
    if not api_key:
        raise TollgateError("Pass api_key= or set TOLLGATE_API_KEY.")
    url = (base_url or os.environ.get("TOLLGATE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    # The official SDKs' base URL ends in /v1; this client adds /v1 itself.
    return api_key, url.removesuffix("/v1")


def _timeout(
    timeout: Timeout | NotGiven, client: httpx.Client | httpx.AsyncClient | None
) -> Timeout:
    if not isinstance(timeout, NotGiven):
        return timeout
    return client.timeout if client is not None else DEFAULT_TIMEOUT


def _official(name: str) -> TollgateError:
    return TollgateError(
        f"client.{name}() needs the {name} package: pip install 'tollgate[{name}]'"
    )


class _Options:
    api_key: str
    base_url: str
    timeout: Timeout
    max_retries: int

    def _settings(
        self,
        api_key: str | NotGiven,
        base_url: str | NotGiven,
        timeout: Timeout | NotGiven,
        max_retries: int | NotGiven,
    ) -> dict[str, Any]:
        return {
            "api_key": self.api_key if isinstance(api_key, NotGiven) else api_key,
            "base_url": self.base_url if isinstance(base_url, NotGiven) else base_url,
            "timeout": self.timeout if isinstance(timeout, NotGiven) else timeout,
            "max_retries": self.max_retries if isinstance(max_retries, NotGiven) else max_retries,
        }


class Tollgate(_Options):
    """The synchronous client.

        client = Tollgate(api_key=MASTER_KEY, base_url="https://tollgate.example.com")

    `api_key` and `base_url` default to `TOLLGATE_API_KEY` and `TOLLGATE_BASE_URL` (then
    `http://127.0.0.1:8080`). `timeout` is in seconds or an `httpx.Timeout` (default: 60 s, 5 s
    to connect); `max_retries` (default 2) applies to connection errors, 408, 409, 429 and 5xx.
    `http_client=` brings your own `httpx.Client` (proxies, certificates, transports).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.api_key, self.base_url = _resolve(api_key, base_url)
        self.timeout = _timeout(timeout, http_client)
        self.max_retries = max_retries
        self._owns_client = http_client is None
        self._client = http_client or httpx.Client(timeout=self.timeout)
        self._http = SyncHTTP(
            self._client, api_key=self.api_key, base_url=self.base_url,
            max_retries=max_retries, timeout=self.timeout,
        )  # fmt: skip

    def with_options(
        self,
        *,
        api_key: str | NotGiven = NOT_GIVEN,
        base_url: str | NotGiven = NOT_GIVEN,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> Tollgate:
        """A client with some options changed that shares this one's connections, e.g. an
        end-user's key: `client.with_options(api_key=key.secret).threads.create()`."""
        return Tollgate(
            **self._settings(api_key, base_url, timeout, max_retries), http_client=self._client
        )

    @cached_property
    def keys(self) -> Keys:
        return Keys(self._http)

    @cached_property
    def usage(self) -> UsageReports:
        return UsageReports(self._http)

    @cached_property
    def logs(self) -> Logs:
        return Logs(self._http)

    @cached_property
    def threads(self) -> Threads:
        return Threads(self._http)

    @cached_property
    def tools(self) -> Tools:
        return Tools(self._http)

    @cached_property
    def search(self) -> Search:
        return Search(self._http)

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self._http)

    @cached_property
    def billing(self) -> Billing:
        return Billing(self._http)

    @cached_property
    def providers(self) -> Providers:
        return Providers(self._http)

    @cached_property
    def settings(self) -> Settings:
        return Settings(self._http)

    @cached_property
    def alerts(self) -> Alerts:
        return Alerts(self._http)

    @cached_property
    def responses(self) -> Responses:
        return Responses(self._http)

    @cached_property
    def conversations(self) -> Conversations:
        return Conversations(self._http)

    def openai(self, *, api_key: str | None = None, **options: Any) -> _openai.OpenAI:
        """The official OpenAI client, pointed at Tollgate (chat, Responses, models), with
        this client's key or `api_key` (an end-user's). Needs `tollgate[openai]`."""
        try:
            import openai
        except ImportError as exc:
            raise _official("openai") from exc
        return openai.OpenAI(
            api_key=api_key or self.api_key, base_url=f"{self.base_url}/v1", **options
        )

    def anthropic(self, *, api_key: str | None = None, **options: Any) -> _anthropic.Anthropic:
        """The official Anthropic client, pointed at Tollgate (Messages, any model), with
        this client's key or `api_key`. Needs `tollgate[anthropic]`."""
        try:
            import anthropic
        except ImportError as exc:
            raise _official("anthropic") from exc
        return anthropic.Anthropic(
            api_key=api_key or self.api_key, base_url=self.base_url, **options
        )

    def close(self) -> None:
        """Close the connections (not those of an `http_client` you passed in)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Tollgate:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTollgate(_Options):
    """The asynchronous client: the same resources and methods as `Tollgate`, awaited."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_key, self.base_url = _resolve(api_key, base_url)
        self.timeout = _timeout(timeout, http_client)
        self.max_retries = max_retries
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(timeout=self.timeout)
        self._http = AsyncHTTP(
            self._client, api_key=self.api_key, base_url=self.base_url,
            max_retries=max_retries, timeout=self.timeout,
        )  # fmt: skip

    def with_options(
        self,
        *,
        api_key: str | NotGiven = NOT_GIVEN,
        base_url: str | NotGiven = NOT_GIVEN,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> AsyncTollgate:
        """A client with some options changed that shares this one's connections."""
        return AsyncTollgate(
            **self._settings(api_key, base_url, timeout, max_retries), http_client=self._client
        )

    @cached_property
    def keys(self) -> AsyncKeys:
        return AsyncKeys(self._http)

    @cached_property
    def usage(self) -> AsyncUsageReports:
        return AsyncUsageReports(self._http)

    @cached_property
    def logs(self) -> AsyncLogs:
        return AsyncLogs(self._http)

    @cached_property
    def threads(self) -> AsyncThreads:
        return AsyncThreads(self._http)

    @cached_property
    def tools(self) -> AsyncTools:
        return AsyncTools(self._http)

    @cached_property
    def search(self) -> AsyncSearch:
        return AsyncSearch(self._http)

    @cached_property
    def jobs(self) -> AsyncJobs:
        return AsyncJobs(self._http)

    @cached_property
    def billing(self) -> AsyncBilling:
        return AsyncBilling(self._http)

    @cached_property
    def providers(self) -> AsyncProviders:
        return AsyncProviders(self._http)

    @cached_property
    def settings(self) -> AsyncSettings:
        return AsyncSettings(self._http)

    @cached_property
    def alerts(self) -> AsyncAlerts:
        return AsyncAlerts(self._http)

    @cached_property
    def responses(self) -> AsyncResponses:
        return AsyncResponses(self._http)

    @cached_property
    def conversations(self) -> AsyncConversations:
        return AsyncConversations(self._http)

    def openai(self, *, api_key: str | None = None, **options: Any) -> _openai.AsyncOpenAI:
        """The official async OpenAI client, pointed at Tollgate. Needs `tollgate[openai]`."""
        try:
            import openai
        except ImportError as exc:
            raise _official("openai") from exc
        return openai.AsyncOpenAI(
            api_key=api_key or self.api_key, base_url=f"{self.base_url}/v1", **options
        )

    def anthropic(self, *, api_key: str | None = None, **options: Any) -> _anthropic.AsyncAnthropic:
        """The official async Anthropic client, pointed at Tollgate. Needs
        `tollgate[anthropic]`."""
        try:
            import anthropic
        except ImportError as exc:
            raise _official("anthropic") from exc
        return anthropic.AsyncAnthropic(
            api_key=api_key or self.api_key, base_url=self.base_url, **options
        )

    async def close(self) -> None:
        """Close the connections (not those of an `http_client` you passed in)."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncTollgate:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


Client = Tollgate
AsyncClient = AsyncTollgate
