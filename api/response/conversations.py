"""Conversations (OpenAI's Conversations API, SPEC §5.2): create, read, update, delete, and
their items; and what `/v1/responses` with `conversation` reads from and adds to one.

A standard key sees only its own conversations, a master key all of its tenant's; anything else
is a 404. Items keep their exact Responses shape (ids, reasoning `encrypted_content`, function
calls), numbered in the order they were added.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import Principal
from api.errors import InvalidRequest, NotFound
from api.kit.time import utcnow
from api.response.models import Conversation
from api.response.repository import ConversationRepository

MAX_ITEMS_PER_CALL = 20  # as at OpenAI
MAX_METADATA = 16
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
              "reasoning": "rs"}  # fmt: skip


def with_id(item: dict[str, Any]) -> dict[str, Any]:
    """An item as it is kept: with an id, and a message in its full form (`type`, content
    parts), as OpenAI lists them back."""
    if "type" not in item and "role" in item:
        item = {"type": "message", **item}
    content = item.get("content")
    if item.get("type") == "message" and isinstance(content, str):
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        item = {**item, "content": [{"type": part, "text": content}]}
    if isinstance(item.get("id"), str) and item["id"]:
        return item
    prefix = _ID_PREFIX.get(str(item.get("type", "message")), "item")
    return {"id": f"{prefix}_{secrets.token_hex(24)}", **item}


def repository(session: AsyncSession, principal: Principal) -> ConversationRepository:
    owner = None if principal.is_master else principal.key_id
    return ConversationRepository(session, principal.tenant_id, owner)


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > MAX_METADATA
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in value.items()
        )
    ):
        raise InvalidRequest(
            f"metadata: at most {MAX_METADATA} string pairs (keys up to 64 characters, values "
            "up to 512).",
            param="metadata",
        )
    return dict(value)


def checked_items(value: Any, param: str = "items") -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS_PER_CALL:
        raise InvalidRequest(f"{param}: a list of at most {MAX_ITEMS_PER_CALL} items.", param=param)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequest(f"{param}[{i}]: must be an item object.", param=f"{param}[{i}]")
        if item.get("type") == "item_reference":
            raise InvalidRequest(
                f"{param}[{i}]: add the item itself to a conversation.", param=f"{param}[{i}]"
            )
    return [with_id(item) for item in value]


def render(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.conversation_id,
        "object": "conversation",
        "created_at": int(conversation.created_at.timestamp()),
        "metadata": conversation.metadata_,
    }


async def create(session: AsyncSession, principal: Principal, body: dict[str, Any]) -> Conversation:
    items = checked_items(body.get("items"))
    conversation = Conversation(
        tenant_id=principal.tenant_id, key_id=principal.key_id,
        conversation_id=f"conv_{secrets.token_hex(24)}", metadata_=_metadata(body.get("metadata")),
        next_position=0, created_at=utcnow(),
    )  # fmt: skip
    session.add(conversation)
    await session.flush()
    repository(session, principal).append(conversation, items)
    await session.flush()
    return conversation


async def get(
    session: AsyncSession, principal: Principal, conversation_id: str, *, lock: bool = False,
    param: str = "conversation_id",
) -> Conversation:  # fmt: skip
    found = await repository(session, principal).by_conversation_id(conversation_id, lock=lock)
    if found is None:
        raise NotFound(f"No conversation with id {conversation_id!r}.", param=param)
    return found


async def update(
    session: AsyncSession, principal: Principal, conversation_id: str, body: dict[str, Any]
) -> Conversation:
    conversation = await get(session, principal, conversation_id)
    conversation.metadata_ = _metadata(body.get("metadata"))
    await session.flush()
    return conversation


async def add_items(
    session: AsyncSession, principal: Principal, conversation_id: str, value: Any
) -> list[dict[str, Any]]:
    items = checked_items(value)
    if not items:
        raise InvalidRequest("items: at least one item.", param="items")
    conversation = await get(session, principal, conversation_id, lock=True)
    repository(session, principal).append(conversation, items)
    await session.flush()
    return items


def conversation_id_of(value: Any) -> str:
    """`conversation` on a Responses request: an id, or `{"id": …}`."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("conversation: a conversation id.", param="conversation")
    return value
