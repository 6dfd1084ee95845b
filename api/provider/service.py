"""Tenants' own provider keys (BYOK, SPEC §5.9): validated upstream on save, sealed at rest,
and loaded (with the tenant's routing settings) into the gateway's in-memory `TenantRouting`."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import InvalidRequest, NotFound
from api.gateway.providers.base import Provider
from api.gateway.routing import Account, CacheSettings, SemanticSettings, TenantRouting
from api.kit.crypto import SecretBox
from api.kit.http1 import HTTPClient, HTTPClientError, Timeouts
from api.kit.time import utcnow
from api.kit.webhooks import check_url, split_url
from api.provider.models import ProviderCredential
from api.provider.repository import ProviderCredentialRepository
from api.provider.schemas import ProviderPut, ProviderRead
from api.shield import service as shield_service
from api.tenant.models import Tenant

logger = logging.getLogger("tollgate.provider")

_VALIDATE_TIMEOUTS = Timeouts(connect=15, read=15, total=15)


def _check_request(provider: str, base_url: str, api_key: str) -> tuple[str, dict[str, str]]:
    """The cheapest authenticated call each provider has: list its models."""
    if provider == "anthropic":
        headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
        return f"{base_url}/v1/models", headers
    if provider == "gemini":
        return f"{base_url}/v1beta/models", {"x-goog-api-key": api_key}
    return f"{base_url}/models", {"Authorization": f"Bearer {api_key}"}


def _upstream_message(body: bytes) -> str | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message[:500] if isinstance(message, str) else None


async def validate_key(http: HTTPClient, provider: str, base_url: str, api_key: str) -> None:
    """Raise `400 invalid_request` (param `api_key`) with the upstream's own message when the
    provider does not accept the key."""
    url, headers = _check_request(provider, base_url.rstrip("/"), api_key)
    try:
        response = await http.request("GET", url, headers=headers, timeouts=_VALIDATE_TIMEOUTS)
        try:
            body = await response.read()
        finally:
            response.release()
        status = response.status
        if status < 400:
            return
    except (HTTPClientError, TimeoutError, ValueError) as exc:
        logger.warning("validating a %s key failed: %r", provider, exc)
        raise InvalidRequest(
            f"The {provider} provider could not be reached to check this key.", param="api_key"
        ) from None
    said = _upstream_message(body) or f"HTTP {status}"
    raise InvalidRequest(f"The {provider} provider rejected this key: {said}", param="api_key")


async def check_base_url(base_url: str, *, allow_private: bool) -> None:
    """The tenant's key is sent to this URL: https (http too where private addresses are
    allowed, for local servers), no userinfo, query or fragment (paths are appended to it),
    and a host that resolves to public addresses only unless private ones are allowed."""
    parts = split_url(base_url, param="base_url")
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise InvalidRequest("base_url: must be an https URL.", param="base_url")
    if "@" in parts.netloc:
        raise InvalidRequest("base_url: must not carry a user name or password.", param="base_url")
    if "?" in base_url or "#" in base_url:
        raise InvalidRequest("base_url: must not have a query or fragment.", param="base_url")
    await check_url(base_url, allow_private=allow_private, param="base_url")


def render(credential: ProviderCredential) -> ProviderRead:
    return ProviderRead(
        name=credential.provider, enabled=credential.enabled, key_last4=credential.key_last4,
        base_url=credential.base_url, validated_at=credential.validated_at,
        created_at=credential.created_at, updated_at=credential.updated_at,
    )  # fmt: skip


async def put(
    session: AsyncSession,
    box: SecretBox,
    http: HTTPClient,
    tenant_id: uuid.UUID,
    provider: str,
    data: ProviderPut,
    default_base_url: str,
) -> ProviderCredential:
    repository = ProviderCredentialRepository(session, tenant_id)
    base_url = data.base_url.rstrip("/") if data.base_url else None
    if data.enabled:  # a disabled key is stored as given; it is checked when enabled
        await validate_key(http, provider, base_url or default_base_url, data.api_key)
    credential = await repository.by_provider(provider)
    if credential is None:
        credential = ProviderCredential(id=uuid.uuid4(), tenant_id=tenant_id, provider=provider)
        repository.add(credential)
    credential.api_key = box.seal(data.api_key)
    credential.key_last4 = data.api_key[-4:]
    credential.base_url = base_url
    credential.enabled = data.enabled
    credential.validated_at = utcnow() if data.enabled else None
    await session.flush()
    await session.refresh(credential)
    return credential


async def list_all(session: AsyncSession, tenant_id: uuid.UUID) -> list[ProviderCredential]:
    return await ProviderCredentialRepository(session, tenant_id).all()


async def get(session: AsyncSession, tenant_id: uuid.UUID, provider: str) -> ProviderCredential:
    credential = await ProviderCredentialRepository(session, tenant_id).by_provider(provider)
    if credential is None:
        raise NotFound(f"No {provider} key is stored for this tenant.")
    return credential


async def delete(session: AsyncSession, tenant_id: uuid.UUID, provider: str) -> None:
    repository = ProviderCredentialRepository(session, tenant_id)
    credential = await repository.by_provider(provider)
    if credential is None:
        raise NotFound(f"No {provider} key is stored for this tenant.")
    await repository.delete(credential)


async def tenant_routing(
    session: AsyncSession,
    box: SecretBox,
    build: Callable[[str, str, str], Provider | None],
    default_base_urls: dict[str, str],
    tenant_id: uuid.UUID,
) -> TenantRouting:
    """What the gateway keeps in memory for a tenant: its enabled keys as accounts, and its
    `failover`, `routing`, `cache` and `shield` settings."""
    routing = TenantRouting()
    tenant = await session.get(Tenant, tenant_id)
    if tenant is not None:
        settings = tenant.settings or {}
        routing.failover = bool((settings.get("failover") or {}).get("enabled", False))
        routing.strategy = str((settings.get("routing") or {}).get("strategy", "default"))
        cache = settings.get("cache") or {}
        if cache.get("enabled"):
            routing.cache = CacheSettings(
                ttl_seconds=int(cache.get("ttl_seconds", 3600)),
                max_temperature=float(cache.get("max_temperature", 1.0)),
                billed_fraction=float(cache.get("billed_fraction", 0.0)),
            )
        semantic = settings.get("semantic_cache") or {}
        if semantic.get("enabled"):
            routing.semantic = SemanticSettings(
                threshold=float(semantic.get("threshold", 0.92)),
                max_entries=int(semantic.get("max_entries", 10_000)),
            )
        routing.shield = shield_service.load(settings)
    for credential in await ProviderCredentialRepository(session, tenant_id).all():
        if not credential.enabled or credential.provider not in default_base_urls:
            continue
        try:
            api_key = box.open(credential.api_key)
        except ValueError:
            logger.error("the stored %s key of tenant %s cannot be decrypted",
                         credential.provider, tenant_id)  # fmt: skip
            continue
        base_url = credential.base_url or default_base_urls[credential.provider]
        provider = build(credential.provider, base_url, api_key)
        if provider is not None:
            name = f"byok:{credential.provider}"
            routing.accounts[credential.provider] = Account(
                f"{name}:{tenant_id.hex[:8]}", provider, byok=True
            )
    return routing
