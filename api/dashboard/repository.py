from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.dashboard.models import DashboardSession
from api.kit.repository import TenantRepository


class DashboardSessionRepository(TenantRepository[DashboardSession]):
    model = DashboardSession

    async def forget_expired(self, now: datetime) -> None:
        await self._delete(DashboardSession.expires_at <= now)

    async def forget_all(self) -> None:
        await self._delete()

    async def _delete(self, *where: ColumnElement[bool]) -> None:
        statement = delete(DashboardSession).where(
            DashboardSession.tenant_id == self.tenant_id, *where
        )
        await self.session.execute(statement)


async def find_by_token_hash_unscoped(
    session: AsyncSession, token_hash: str
) -> DashboardSession | None:
    """The session a cookie names, before its tenant is known."""
    statement = select(DashboardSession).where(DashboardSession.token_hash == token_hash)
    found: DashboardSession | None = (await session.execute(statement)).scalar_one_or_none()
    return found


async def delete_by_token_hash_unscoped(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(DashboardSession).where(DashboardSession.token_hash == token_hash))
