"""`POST /v1/shield/test` (master key): what the tenant's secret shield makes of a text."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import DbSession, MasterPrincipal
from api.shield import service as shield_service
from api.shield.schemas import ShieldTestIn, ShieldTestOut
from api.tenant import service as tenant_service

router = APIRouter(prefix="/v1/shield", tags=["shield"])


@router.post("/test", response_model=ShieldTestOut)
async def test_shield(
    data: ShieldTestIn, session: DbSession, principal: MasterPrincipal
) -> ShieldTestOut:
    tenant = await tenant_service.get_tenant(session, principal.tenant_id)
    return shield_service.test(tenant.settings or {}, data)
