"""`/v1/providers`: a tenant's own provider keys (BYOK, SPEC §5.9), with the master key."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from api.db import after_commit
from api.deps import DbSession, MasterPrincipal
from api.provider import service
from api.provider.schemas import (
    ProviderDeleted,
    ProviderList,
    ProviderName,
    ProviderPut,
    ProviderRead,
)

router = APIRouter(prefix="/v1/providers", tags=["providers"])


def _invalidate(request: Request, session: DbSession, tenant_id: uuid.UUID) -> None:
    router = request.state.gateway.router
    if router is None:
        return

    async def hook() -> None:
        await router.announce(tenant_id)

    after_commit(session, hook)


@router.put("/{name}", response_model=ProviderRead)
async def put_provider(
    name: ProviderName,
    data: ProviderPut,
    request: Request,
    session: DbSession,
    principal: MasterPrincipal,
) -> ProviderRead:
    settings = request.state.settings
    if data.base_url is not None:
        await service.check_base_url(data.base_url, allow_private=settings.allow_private_webhooks)
    gateway = request.state.gateway
    credential = await service.put(
        session, request.state.secret_box, gateway.providers.tenant_client, principal.tenant_id,
        name, data, settings.providers[name].base_url,
    )  # fmt: skip
    _invalidate(request, session, principal.tenant_id)
    return service.render(credential)


@router.get("", response_model=ProviderList)
async def list_providers(session: DbSession, principal: MasterPrincipal) -> ProviderList:
    credentials = await service.list_all(session, principal.tenant_id)
    return ProviderList(data=[service.render(item) for item in credentials])


@router.get("/{name}", response_model=ProviderRead)
async def get_provider(
    name: ProviderName, session: DbSession, principal: MasterPrincipal
) -> ProviderRead:
    return service.render(await service.get(session, principal.tenant_id, name))


@router.delete("/{name}", response_model=ProviderDeleted)
async def delete_provider(
    name: ProviderName, request: Request, session: DbSession, principal: MasterPrincipal
) -> ProviderDeleted:
    await service.delete(session, principal.tenant_id, name)
    _invalidate(request, session, principal.tenant_id)
    return ProviderDeleted(name=name)
