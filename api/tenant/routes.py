"""`/admin/tenants`: the operator creates tenants with `TOLLGATE_ADMIN_TOKEN` (SPEC §5.11)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminAccess, DbSession, Pepper
from api.tenant import service as tenant_service
from api.tenant.schemas import TenantCreate, TenantRead

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminAccess])


@router.post("/tenants", status_code=201, response_model=TenantRead)
async def create_tenant(data: TenantCreate, session: DbSession, pepper: Pepper) -> TenantRead:
    tenant, master_key = await tenant_service.create_tenant(session, pepper, data.name)
    return TenantRead(
        id=str(tenant.id), name=tenant.name, created_at=tenant.created_at, master_key=master_key
    )
