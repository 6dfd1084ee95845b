from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service as auth_service
from api.tenant.models import Tenant


async def create_tenant(session: AsyncSession, pepper: bytes, name: str) -> tuple[Tenant, str]:
    """A tenant and its first master key; the secret is returned once and never stored."""
    tenant = Tenant(id=uuid.uuid4(), name=name)
    session.add(tenant)
    await session.flush()
    _, secret = await auth_service.create_master_key(session, pepper, tenant.id)
    return tenant, secret
