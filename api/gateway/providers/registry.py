"""Providers by name, sharing long-lived `HTTPClient`s built in the app's lifespan: one for the
operator's accounts, one for tenants' own keys (BYOK), whose hosts the tenant names: that one
connects only to public addresses unless `allow_private_webhooks` is set, and its connections
are its own, so tenants' hosts cannot hold the operator's."""

from __future__ import annotations

import urllib.request
from collections.abc import Collection

from api.errors import InvalidRequest, ProviderNotConfigured
from api.gateway.providers.anthropic import AnthropicProvider
from api.gateway.providers.base import Provider
from api.gateway.providers.gemini import GeminiProvider
from api.gateway.providers.mock import MockProvider
from api.gateway.providers.openai_compat import OpenAICompatProvider
from api.kit.http1 import HTTPClient, Timeouts
from api.kit.proxies import Proxies
from api.kit.webhooks import is_public_address
from api.settings import AccountSettings, ConfigurationError, Settings

# Providers speaking Chat Completions; the others have their own adapter and `dialect`.
OPENAI_COMPATIBLE = ("openai", "deepseek")
NATIVE = {"anthropic": AnthropicProvider, "gemini": GeminiProvider}


def upstream_proxies() -> Proxies:
    """The proxies the environment names for upstream calls (`HTTPS_PROXY`, `HTTP_PROXY`,
    `ALL_PROXY`, `NO_PROXY`, as the providers' own SDKs read them)."""
    try:
        return Proxies(urllib.request.getproxies())
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def create_client(
    settings: Settings, proxies: Proxies | None = None, *, tenant: bool = False
) -> HTTPClient:
    """The client for the operator's upstreams, or (`tenant`) for hosts tenants named."""
    private = settings.allow_private_webhooks
    return HTTPClient(
        max_connections=settings.upstream_max_connections,
        max_connections_per_origin=settings.upstream_max_connections_per_origin,
        keepalive_seconds=60,
        proxies=proxies,
        check_peer=is_public_address if tenant and not private else None,
    )


class ProviderRegistry:
    def __init__(
        self, settings: Settings, client: HTTPClient, tenant_client: HTTPClient | None = None
    ) -> None:
        connect = settings.upstream_connect_timeout_seconds
        read = settings.upstream_read_timeout_seconds
        self._client = client
        self._tenant_client = tenant_client or client
        # A request waits for a free connection as long as it would for a new one.
        total = settings.upstream_total_timeout_seconds
        self._timeouts = Timeouts(connect, read, total, pool=connect)
        self._stream_timeouts = Timeouts(connect, read, total=None, pool=connect)
        self._providers: dict[str, Provider] = {}
        self.pools: dict[str, list[AccountSettings]] = settings.upstream_pools
        for name, accounts in self.pools.items():
            if accounts:  # the first account answers where no pool is consulted (count_tokens)
                built = self.build(name, accounts[0].base_url, accounts[0].api_key)
                if built is not None:
                    self._providers[name] = built
        self._configured = {name for name, accounts in self.pools.items() if accounts}
        self.mock = MockProvider()

    def build(
        self, name: str, base_url: str, api_key: str, *, tenant: bool = False
    ) -> Provider | None:
        """An adapter for one account of provider `name`: an operator's key, or (`tenant`) a
        tenant's own, whose calls go through the tenant client."""
        client = self._tenant_client if tenant else self._client
        if name in OPENAI_COMPATIBLE:
            return OpenAICompatProvider(
                name, base_url, api_key, client, self._timeouts, self._stream_timeouts
            )
        if name in NATIVE:
            return NATIVE[name](
                name, base_url, api_key, client, self._timeouts, self._stream_timeouts
            )
        return None

    def build_for_tenant(self, name: str, base_url: str, api_key: str) -> Provider | None:
        return self.build(name, base_url, api_key, tenant=True)

    @property
    def client(self) -> HTTPClient:
        return self._client

    @property
    def tenant_client(self) -> HTTPClient:
        """For calls to a host a tenant named (its BYOK `base_url`), key checks included."""
        return self._tenant_client

    def get(self, name: str, *, test: bool, dialects: Collection[str] = ("openai",)) -> Provider:
        """The provider for `name`, if it speaks one of `dialects` (the wire formats the calling
        endpoint can translate to; the OpenAI-shaped passthrough handles only "openai")."""
        if test:
            return self.mock
        provider = self._providers.get(name)
        if provider is not None and provider.dialect in dialects:
            return provider
        if name in self._configured:
            raise InvalidRequest(
                f"Models of the {name} provider are not served by this endpoint yet.", param="model"
            )
        raise ProviderNotConfigured(
            f"The {name} provider has no credentials configured on this gateway.", param="model"
        )

    def available(self) -> set[str]:
        return set(self._providers)
