"""`/v1/conversations` (OpenAI's Conversations API): a conversation, its metadata and items."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import DbSession, Principal
from api.errors import InvalidRequest, NotFound
from api.response import conversations
from api.response.routes import item_page

router = APIRouter(prefix="/v1/conversations", tags=["responses"])


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return value


@router.post("")
async def create_conversation(
    session: DbSession, principal: Principal, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    conversation = await conversations.create(session, principal, _object(body or {}))
    return conversations.render(conversation)


@router.get("/{conversation_id}")
async def get_conversation(
    conversation_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    return conversations.render(await conversations.get(session, principal, conversation_id))


@router.post("/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: dict[str, Any], session: DbSession, principal: Principal
) -> dict[str, Any]:
    updated = await conversations.update(session, principal, conversation_id, _object(body))
    return conversations.render(updated)


@router.delete("/{conversation_id}")
async def delete_conversation(
    conversation_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    found = await conversations.get(session, principal, conversation_id)
    await conversations.repository(session, principal).remove(found)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    session: DbSession,
    principal: Principal,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = Query(None, max_length=128),
) -> dict[str, Any]:
    found = await conversations.get(session, principal, conversation_id)
    items = [row.item for row in await conversations.repository(session, principal).items(found)]
    return item_page(items, limit=limit, order=order, after=after, within="this conversation")


@router.post("/{conversation_id}/items")
async def add_items(
    conversation_id: str, body: dict[str, Any], session: DbSession, principal: Principal
) -> JSONResponse:
    added = await conversations.add_items(
        session, principal, conversation_id, _object(body).get("items")
    )
    page = item_page(added, limit=len(added), order="asc", after=None, within="")
    return JSONResponse(page)


@router.get("/{conversation_id}/items/{item_id}")
async def get_item(
    conversation_id: str, item_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    found = await conversations.get(session, principal, conversation_id)
    item = await conversations.repository(session, principal).item(found, item_id)
    if item is None:
        raise NotFound(f"No item with id {item_id!r} in this conversation.", param="item_id")
    return item.item


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    found = await conversations.get(session, principal, conversation_id)
    scope = conversations.repository(session, principal)
    item = await scope.item(found, item_id)
    if item is None:
        raise NotFound(f"No item with id {item_id!r} in this conversation.", param="item_id")
    await scope.remove_item(item)
    return conversations.render(found)
