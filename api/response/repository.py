"""All SQL for stored responses. A standard key's repository sees only its own; a master key's
all of its tenant's (as for threads)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.kit.repository import TenantRepository
from api.kit.time import utcnow
from api.response.models import Conversation, ConversationItem, ResponseItem, StoredResponse


class ResponseRepository(TenantRepository[StoredResponse]):
    model = StoredResponse

    def __init__(
        self, session: AsyncSession, tenant_id: uuid.UUID, owner_key_id: uuid.UUID | None
    ) -> None:
        super().__init__(session, tenant_id)
        self.owner_key_id = owner_key_id

    def base(self) -> Select[tuple[StoredResponse]]:
        statement = super().base().where(StoredResponse.expires_at > utcnow())
        if self.owner_key_id is not None:
            statement = statement.where(StoredResponse.key_id == self.owner_key_id)
        return statement

    async def by_response_id(self, response_id: str) -> StoredResponse | None:
        statement = self.base().where(StoredResponse.response_id == response_id)
        return cast(StoredResponse | None, (await self.session.scalars(statement)).one_or_none())

    async def items(self, response: StoredResponse) -> list[ResponseItem]:
        statement = (
            select(ResponseItem)
            .where(
                ResponseItem.tenant_id == self.tenant_id, ResponseItem.response_pk == response.id
            )
            .order_by(ResponseItem.position)
        )
        return list((await self.session.execute(statement)).scalars())

    async def item(self, item_id: str) -> ResponseItem | None:
        """An item of one of this scope's live responses (the newest, should an id repeat)."""
        statement = (
            select(ResponseItem)
            .join(StoredResponse, StoredResponse.id == ResponseItem.response_pk)
            .where(
                ResponseItem.tenant_id == self.tenant_id,
                ResponseItem.item_id == item_id,
                StoredResponse.expires_at > utcnow(),
            )
            .order_by(StoredResponse.created_at.desc())
            .limit(1)
        )
        if self.owner_key_id is not None:
            statement = statement.where(ResponseItem.key_id == self.owner_key_id)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def remove(self, response: StoredResponse) -> None:
        await self.session.execute(
            delete(StoredResponse).where(
                StoredResponse.tenant_id == self.tenant_id, StoredResponse.id == response.id
            )
        )

    async def add(
        self,
        response: StoredResponse,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
    ) -> None:
        self.session.add(response)
        await self.session.flush()  # the items refer to it
        await self.add_items(response, inputs, outputs)

    async def add_items(
        self,
        response: StoredResponse,
        inputs: list[dict[str, Any]],
        outputs: list[dict[str, Any]],
    ) -> None:
        for position, (item, output) in enumerate(
            [(i, False) for i in inputs] + [(o, True) for o in outputs]
        ):
            self.session.add(
                ResponseItem(
                    tenant_id=response.tenant_id,
                    key_id=response.key_id,
                    response_pk=response.id,
                    item_id=str(item.get("id") or ""),
                    position=position,
                    output=output,
                    item=item,
                )
            )
        await self.session.flush()


class ConversationRepository(TenantRepository[Conversation]):
    model = Conversation

    def __init__(
        self, session: AsyncSession, tenant_id: uuid.UUID, owner_key_id: uuid.UUID | None
    ) -> None:
        super().__init__(session, tenant_id)
        self.owner_key_id = owner_key_id

    def base(self) -> Select[tuple[Conversation]]:
        statement = super().base()
        if self.owner_key_id is not None:
            statement = statement.where(Conversation.key_id == self.owner_key_id)
        return statement

    async def by_conversation_id(
        self, conversation_id: str, *, lock: bool = False
    ) -> Conversation | None:
        statement = self.base().where(Conversation.conversation_id == conversation_id)
        if lock:  # positions are handed out under the row's lock
            statement = statement.with_for_update()
        found = (await self.session.scalars(statement)).one_or_none()
        return cast(Conversation | None, found)

    async def items(self, conversation: Conversation) -> list[ConversationItem]:
        statement = (
            select(ConversationItem)
            .where(
                ConversationItem.tenant_id == self.tenant_id,
                ConversationItem.conversation_pk == conversation.id,
            )
            .order_by(ConversationItem.position)
        )
        return list((await self.session.scalars(statement)).all())

    async def item(self, conversation: Conversation, item_id: str) -> ConversationItem | None:
        statement = select(ConversationItem).where(
            ConversationItem.tenant_id == self.tenant_id,
            ConversationItem.conversation_pk == conversation.id,
            ConversationItem.item_id == item_id,
        )
        return (await self.session.scalars(statement.limit(1))).one_or_none()

    async def item_by_id(self, item_id: str) -> ConversationItem | None:
        """An item of any of this scope's conversations (the newest, should an id repeat)."""
        statement = (
            select(ConversationItem)
            .join(Conversation, Conversation.id == ConversationItem.conversation_pk)
            .where(
                ConversationItem.tenant_id == self.tenant_id, ConversationItem.item_id == item_id
            )
            .order_by(ConversationItem.position.desc())
            .limit(1)
        )
        if self.owner_key_id is not None:
            statement = statement.where(Conversation.key_id == self.owner_key_id)
        return (await self.session.scalars(statement)).one_or_none()

    async def remove(self, conversation: Conversation) -> None:
        await self.session.execute(
            delete(Conversation).where(
                Conversation.tenant_id == self.tenant_id, Conversation.id == conversation.id
            )
        )

    async def remove_item(self, item: ConversationItem) -> None:
        await self.session.execute(
            delete(ConversationItem).where(
                ConversationItem.tenant_id == self.tenant_id, ConversationItem.id == item.id
            )
        )

    def append(self, conversation: Conversation, items: list[dict[str, Any]]) -> None:
        """Add `items` at the end; the caller holds the conversation's row lock."""
        for item in items:
            self.session.add(
                ConversationItem(
                    tenant_id=self.tenant_id,
                    conversation_pk=conversation.id,
                    item_id=str(item.get("id") or ""),
                    position=conversation.next_position,
                    item=item,
                )
            )
            conversation.next_position += 1


async def expire_unscoped(session: AsyncSession, now: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` responses past their retention (their items go with them)."""
    stale = select(StoredResponse.id).where(StoredResponse.expires_at <= now).limit(limit)
    ids = list((await session.execute(stale)).scalars())
    if ids:
        await session.execute(delete(StoredResponse).where(and_(StoredResponse.id.in_(ids))))
    return len(ids)
