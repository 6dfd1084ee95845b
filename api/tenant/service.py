from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import limits as limit_rules
from api.auth import service as auth_service
from api.auth.schemas import limit_read
from api.errors import NotFound
from api.kit.crypto import SecretBox
from api.kit.webhooks import check_url
from api.shield.schemas import ShieldSettings
from api.tenant.models import Tenant
from api.tenant.schemas import (
    AlertSettings,
    AlertSettingsRead,
    CacheSettings,
    FailoverSettings,
    RetentionSettings,
    RoutingSettings,
    SemanticCacheSettings,
    SettingsRead,
    SettingsUpdate,
)


async def create_tenant(session: AsyncSession, pepper: bytes, name: str) -> tuple[Tenant, str]:
    """A tenant and its first master key; the secret is returned once and never stored."""
    tenant = Tenant(id=uuid.uuid4(), name=name)
    session.add(tenant)
    await session.flush()
    _, secret = await auth_service.create_master_key(session, pepper, tenant.id)
    return tenant, secret


async def get_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:  # the caller's own tenant: only a deleted tenant can be missing
        raise NotFound("No such tenant.")
    return tenant


async def update_settings(
    session: AsyncSession, tenant_id: uuid.UUID, data: SettingsUpdate, *, allow_private: bool
) -> tuple[Tenant, bool]:
    """Apply the given groups; returns the tenant and whether its limits changed."""
    tenant = await get_tenant(session, tenant_id)
    limits_changed = "limits" in data.model_fields_set
    if limits_changed:
        given = [item.to_limit() for item in data.limits or []]
        tenant.limits = [limit.as_json() for limit in limit_rules.combine(given, None)]
    if "alerts" in data.model_fields_set:
        tenant.settings = {
            **tenant.settings,
            "alerts": await _alert_settings(tenant, data.alerts, allow_private=allow_private),
        }
    for group in ("failover", "routing", "cache", "semantic_cache", "shield", "retention"):
        if group in data.model_fields_set:
            value = getattr(data, group)
            dumped = value.model_dump() if value is not None else None
            tenant.settings = {k: v for k, v in tenant.settings.items() if k != group}
            if dumped is not None:
                tenant.settings = {**tenant.settings, group: dumped}
    await session.flush()
    return tenant, limits_changed


async def _alert_settings(
    tenant: Tenant, given: AlertSettings | None, *, allow_private: bool
) -> dict[str, Any]:
    """The `alerts` group: the fields given replace the stored ones (`null` clears the group)."""
    if given is None:
        return {"webhook_url": None, "emails": []}
    stored = tenant.settings.get("alerts") or {}
    url = (
        given.webhook_url if "webhook_url" in given.model_fields_set else stored.get("webhook_url")
    )
    if url is not None and "webhook_url" in given.model_fields_set:
        await check_url(url, allow_private=allow_private, param="alerts.webhook_url")
    emails = given.emails if "emails" in given.model_fields_set else stored.get("emails") or []
    unique: list[str] = []  # once each, the first spelling kept
    for address in emails:
        if address.lower() not in {seen.lower() for seen in unique}:
            unique.append(address)
    return {"webhook_url": url, "emails": unique}


async def new_webhook_secret(session: AsyncSession, box: SecretBox, tenant_id: uuid.UUID) -> str:
    """A new signing secret for alerts (and job completions); shown once, stored sealed."""
    tenant = await get_tenant(session, tenant_id)
    secret = "whsec_" + secrets.token_urlsafe(32)
    tenant.webhook_secret = box.seal(secret)
    await session.flush()
    return secret


def render_settings(tenant: Tenant) -> SettingsRead:
    limits = [limit_rules.Limit.from_json(item) for item in tenant.limits]
    alerts = tenant.settings.get("alerts") or {}
    return SettingsRead(
        limits=[limit_read(limit) for limit in limits],
        alerts=AlertSettingsRead(
            webhook_url=alerts.get("webhook_url"),
            emails=alerts.get("emails") or [],
            signing_secret_set=bool(tenant.webhook_secret),
        ),
        failover=FailoverSettings(**(tenant.settings.get("failover") or {})),
        routing=RoutingSettings(**(tenant.settings.get("routing") or {})),
        cache=CacheSettings(**(tenant.settings.get("cache") or {})),
        semantic_cache=SemanticCacheSettings(**(tenant.settings.get("semantic_cache") or {})),
        retention=RetentionSettings(**(tenant.settings.get("retention") or {})),
        shield=ShieldSettings.stored(tenant.settings.get("shield")),
    )
