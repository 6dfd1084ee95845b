"""Threads: create, list, read, delete, and page through their messages (SPEC §5.4).

A standard key sees and writes only the threads it created; a master key all of its tenant's.
The turn itself (`POST /v1/threads/{id}/messages`) is in `api.thread.turns`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import Principal
from api.errors import NotFound
from api.kit.money import micros_to_usd
from api.kit.pagination import Page
from api.thread.models import Thread, ThreadMessage
from api.thread.repository import MessageRepository, ThreadRepository
from api.thread.schemas import MessageRead, MessageUsage, ThreadCreate, ThreadRead


def threads(session: AsyncSession, principal: Principal) -> ThreadRepository:
    owner = None if principal.is_master else principal.key_id
    return ThreadRepository(session, principal.tenant_id, owner)


async def create_thread(session: AsyncSession, principal: Principal, data: ThreadCreate) -> Thread:
    thread = Thread(
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        system=data.system,
        metadata_=data.metadata or {},
        message_count=0,
    )
    session.add(thread)
    await session.flush()
    return thread


async def get_thread(session: AsyncSession, principal: Principal, thread_id: uuid.UUID) -> Thread:
    thread = await threads(session, principal).get(thread_id)
    if thread is None:
        raise NotFound(f"No thread with id {thread_id}.", param="id")
    return thread


async def list_threads(
    session: AsyncSession,
    principal: Principal,
    *,
    key_id: uuid.UUID | None,
    limit: int,
    cursor: str | None,
) -> Page[Thread]:
    repository = threads(session, principal)
    statement = repository.base()
    if key_id is not None:
        statement = statement.where(Thread.key_id == key_id)
    return await repository.paginate(statement, limit=limit, cursor=cursor)


async def delete_thread(
    session: AsyncSession, principal: Principal, thread_id: uuid.UUID
) -> Thread:
    thread = await get_thread(session, principal, thread_id)
    await threads(session, principal).remove(thread)
    return thread


async def list_messages(
    session: AsyncSession,
    principal: Principal,
    thread_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    order: str,
) -> Page[ThreadMessage]:
    await get_thread(session, principal, thread_id)
    repository = MessageRepository(session, principal.tenant_id)
    return await repository.page(thread_id, limit=limit, cursor=cursor, order=order)


async def unindexed(
    session: AsyncSession, principal: Principal, thread_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of the (visible) threads with a message not yet in the search index."""
    return await MessageRepository(session, principal.tenant_id).unindexed_threads(thread_ids)


def render_thread(thread: Thread, *, indexed: bool) -> ThreadRead:
    return ThreadRead(
        id=str(thread.id),
        key_id=str(thread.key_id),
        system=thread.system,
        metadata=thread.metadata_,
        message_count=thread.message_count,
        indexed=indexed,
        created_at=thread.created_at,
        updated_at=thread.updated_at,
    )


def render_message(
    message: ThreadMessage, *, turn: Sequence[ThreadMessage] | None = None
) -> MessageRead:
    """With `turn`, the usage is the whole turn's (every model call of its tool loop)."""
    usage = None
    if message.role == "assistant":
        counted = [m for m in turn if m.role == "assistant"] if turn else [message]
        cost = sum(m.cost_micros for m in counted)
        usage = MessageUsage(
            input_tokens=sum(m.input_tokens for m in counted),
            output_tokens=sum(m.output_tokens for m in counted),
            cost_micros=cost,
            cost_usd=micros_to_usd(cost),
        )
    return MessageRead(
        id=str(message.id),
        thread_id=str(message.thread_id),
        turn_id=str(message.turn_id),
        seq=message.seq,
        role=message.role,
        content=message.content,
        model=message.model,
        provider=message.provider,
        stop_reason=message.stop_reason,
        usage=usage,
        request_id=message.request_id,
        created_at=message.created_at,
    )
