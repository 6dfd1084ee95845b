from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import InvalidRequest
from api.kit.pagination import Page
from api.kit.repository import TenantRepository
from api.thread.models import Thread, ThreadMessage


class ThreadRepository(TenantRepository[Thread]):
    """A tenant's threads; with `owner_key_id` (a standard key) only that key's."""

    model = Thread

    def __init__(
        self, session: AsyncSession, tenant_id: uuid.UUID, owner_key_id: uuid.UUID | None
    ) -> None:
        super().__init__(session, tenant_id)
        self.owner_key_id = owner_key_id

    def base(self) -> Select[tuple[Thread]]:
        statement = super().base()
        if self.owner_key_id is not None:
            statement = statement.where(Thread.key_id == self.owner_key_id)
        return statement

    async def lock(self, thread_id: uuid.UUID) -> Thread | None:
        """The thread row under `SELECT … FOR UPDATE` (SQLite's single writer serialises)."""
        statement = self.base().where(Thread.id == thread_id).with_for_update()
        result = await self.session.execute(statement.execution_options(populate_existing=True))
        return cast(Thread | None, result.scalar_one_or_none())

    async def remove(self, thread: Thread) -> None:
        await self.session.execute(
            delete(Thread).where(Thread.tenant_id == self.tenant_id, Thread.id == thread.id)
        )


class MessageRepository(TenantRepository[ThreadMessage]):
    model = ThreadMessage

    async def history(self, thread_id: uuid.UUID) -> list[ThreadMessage]:
        statement = self.base().where(ThreadMessage.thread_id == thread_id)
        return await self._all(statement.order_by(ThreadMessage.seq))

    async def unindexed_threads(self, thread_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Those of the threads with a message search has yet to index."""
        if not thread_ids:
            return set()
        statement = (
            select(ThreadMessage.thread_id)
            .where(
                ThreadMessage.tenant_id == self.tenant_id,
                ThreadMessage.thread_id.in_(thread_ids),
                ThreadMessage.indexed_at.is_(None),
            )
            .distinct()
        )
        return set((await self.session.execute(statement)).scalars())

    async def _all(self, statement: Select[tuple[ThreadMessage]]) -> list[ThreadMessage]:
        rows: Sequence[Any] = (await self.session.execute(statement)).scalars().all()
        return list(rows)

    async def turn_for_key(self, thread_id: uuid.UUID, key: str) -> list[ThreadMessage]:
        """The messages of the turn a client sent with this `Idempotency-Key`, in order."""
        first = await self.session.execute(
            self.base().where(
                ThreadMessage.thread_id == thread_id, ThreadMessage.idempotency_key == key
            )
        )
        user: Any = first.scalar_one_or_none()
        if user is None:
            return []
        return await self._all(
            self.base()
            .where(ThreadMessage.thread_id == thread_id, ThreadMessage.turn_id == user.turn_id)
            .order_by(ThreadMessage.seq)
        )

    async def page(
        self, thread_id: uuid.UUID, *, limit: int, cursor: str | None, order: str
    ) -> Page[ThreadMessage]:
        """Keyset pages on `seq`, oldest first (`order="asc"`) or newest first."""
        statement = self.base().where(ThreadMessage.thread_id == thread_id)
        seq = ThreadMessage.seq
        if cursor:  # an empty cursor is the first page, as no cursor is
            after = _decode(cursor)
            statement = statement.where(seq > after if order == "asc" else seq < after)
        ordered = seq.asc() if order == "asc" else seq.desc()
        rows = await self._all(statement.order_by(ordered).limit(limit + 1))
        has_more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=rows, has_more=has_more, next_cursor=_encode(rows[-1].seq) if has_more else None
        )


def _encode(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()).decode()
        kind, _, value = raw.partition(":")
        if kind != "seq":
            raise ValueError(kind)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("The cursor is not valid.", param="cursor") from exc
