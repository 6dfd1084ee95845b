"""`/admin/tenants` (the operator, with `TOLLGATE_ADMIN_TOKEN`, SPEC §5.11) and `/v1/settings`
(a tenant's own settings, with its master key, SPEC §5.10)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.db import after_commit
from api.deps import AdminAccess, DbSession, MasterPrincipal, Pepper
from api.tenant import service as tenant_service
from api.tenant.schemas import (
    SettingsRead,
    SettingsUpdate,
    TenantCreate,
    TenantRead,
    WebhookSecretRead,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAccess])
settings_router = APIRouter(prefix="/v1/settings", tags=["settings"])


@router.post("/tenants", status_code=201, response_model=TenantRead)
async def create_tenant(data: TenantCreate, session: DbSession, pepper: Pepper) -> TenantRead:
    tenant, master_key = await tenant_service.create_tenant(session, pepper, data.name)
    return TenantRead(
        id=str(tenant.id), name=tenant.name, created_at=tenant.created_at, master_key=master_key
    )


@settings_router.get("", response_model=SettingsRead)
async def get_settings(session: DbSession, principal: MasterPrincipal) -> SettingsRead:
    tenant = await tenant_service.get_tenant(session, principal.tenant_id)
    return tenant_service.render_settings(tenant)


@settings_router.put("", response_model=SettingsRead)
async def update_settings(
    request: Request, data: SettingsUpdate, session: DbSession, principal: MasterPrincipal
) -> SettingsRead:
    allow_private = request.state.settings.allow_private_webhooks
    tenant, limits_changed = await tenant_service.update_settings(
        session, principal.tenant_id, data, allow_private=allow_private
    )
    if limits_changed:
        state = request.state

        async def hook() -> None:  # every key carries its tenant's limits: recount, re-read
            await state.key_cache.tenant_changed()
            await state.gateway.budget.limits_changed(tenant.id, "tenant")

        after_commit(session, hook)
    router = request.state.gateway.router
    routed = {"failover", "routing", "cache", "semantic_cache", "shield"}  # the gateway reads
    if router is not None and data.model_fields_set & routed:

        async def routing_changed() -> None:
            await router.announce(tenant.id)

        after_commit(session, routing_changed)
    return tenant_service.render_settings(tenant)


@settings_router.post("/webhook-secret", response_model=WebhookSecretRead)
async def create_webhook_secret(
    request: Request, session: DbSession, principal: MasterPrincipal
) -> WebhookSecretRead:
    secret = await tenant_service.new_webhook_secret(
        session, request.state.secret_box, principal.tenant_id
    )
    return WebhookSecretRead(secret=secret)
