"""Tenant-scoped repositories: every query of a tenant-owned table starts from `base()`."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.kit.pagination import Page, decode_cursor, encode_cursor

ModelT = TypeVar("ModelT", bound=Any)


class TenantRepository(Generic[ModelT]):
    model: ClassVar[type[Any]]

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def base(self) -> Select[tuple[ModelT]]:
        return select(self.model).where(self.model.tenant_id == self.tenant_id)

    async def get(self, item_id: uuid.UUID) -> ModelT | None:
        result = await self.session.execute(self.base().where(self.model.id == item_id))
        item: ModelT | None = result.scalar_one_or_none()
        return item

    async def paginate(
        self, statement: Select[tuple[ModelT]], *, limit: int, cursor: str | None
    ) -> Page[ModelT]:
        """Newest first, keyset on (created_at, id) so pages stay stable under inserts."""
        created_at, item_id = self.model.created_at, self.model.id
        if cursor:  # an empty cursor is the first page, as no cursor is
            after = decode_cursor(cursor)
            statement = statement.where(
                or_(
                    created_at < after.created_at,
                    and_(created_at == after.created_at, item_id < after.id),
                )
            )
        statement = statement.order_by(created_at.desc(), item_id.desc()).limit(limit + 1)
        rows = list((await self.session.execute(statement)).scalars())
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more else None
        return Page(items=rows, has_more=has_more, next_cursor=next_cursor)
