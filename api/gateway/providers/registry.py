"""Providers by name, sharing one long-lived aiohttp session built in the app's lifespan."""

from __future__ import annotations

from collections.abc import Collection

import aiohttp

from api.errors import InvalidRequest, ProviderNotConfigured
from api.gateway.providers.anthropic import AnthropicProvider
from api.gateway.providers.base import Provider
from api.gateway.providers.gemini import GeminiProvider
from api.gateway.providers.mock import MockProvider
from api.gateway.providers.openai_compat import OpenAICompatProvider
from api.settings import Settings

# Providers speaking Chat Completions; the others have their own adapter and `dialect`.
OPENAI_COMPATIBLE = ("openai", "deepseek")
NATIVE = {"anthropic": AnthropicProvider, "gemini": GeminiProvider}


def create_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_max_connections, keepalive_timeout=60, ttl_dns_cache=300
    )
    # Compression would cost CPU on every chunk for bytes that stay on a fast link.
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)


class ProviderRegistry:
    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(
            total=settings.upstream_total_timeout_seconds,
            connect=settings.upstream_connect_timeout_seconds,
            sock_read=settings.upstream_read_timeout_seconds,
        )
        stream_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_connect_timeout_seconds,
            sock_read=settings.upstream_read_timeout_seconds,
        )
        self._providers: dict[str, Provider] = {}
        for name, config in settings.providers.items():
            if not config.api_key:
                continue
            if name in OPENAI_COMPATIBLE:
                self._providers[name] = OpenAICompatProvider(
                    name, config.base_url, config.api_key, session, timeout, stream_timeout
                )
            elif name in NATIVE:
                self._providers[name] = NATIVE[name](
                    name, config.base_url, config.api_key, session, timeout, stream_timeout
                )
        self._configured = {name for name, c in settings.providers.items() if c.api_key}
        self.mock = MockProvider()

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
