from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.kit.repository import TenantRepository
from api.tool.models import Tool


class ToolRepository(TenantRepository[Tool]):
    model = Tool

    async def by_name(self, name: str) -> Tool | None:
        found: Tool | None = (
            await self.session.scalars(
                select(Tool).where(Tool.tenant_id == self.tenant_id, Tool.name == name)
            )
        ).one_or_none()
        return found

    async def by_names(self, names: Collection[str]) -> list[Tool]:
        if not names:
            return []
        rows: Sequence[Any] = (
            (await self.session.execute(self.base().where(Tool.name.in_(list(names)))))
            .scalars()
            .all()
        )
        return list(rows)

    async def remove(self, tool: Tool) -> None:
        await self.session.execute(
            delete(Tool).where(Tool.tenant_id == self.tenant_id, Tool.id == tool.id)
        )


async def get_unscoped(session: AsyncSession, tool_id: uuid.UUID) -> Tool | None:
    """The worker's lookup: the job carries the id of a tool its turn already resolved."""
    result = await session.execute(select(Tool).where(Tool.id == tool_id))
    return result.scalar_one_or_none()
