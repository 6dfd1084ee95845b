"""Stored responses: `GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`,
`DELETE /v1/responses/{id}` (OpenAI's shapes). A standard key sees its own, a master key all of
its tenant's; anything else is a 404."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from api.deps import DbSession, Principal
from api.errors import NotFound
from api.response import service as response_service

router = APIRouter(prefix="/v1/responses", tags=["responses"])


@router.get("/{response_id}")
async def get_response(response_id: str, session: DbSession, principal: Principal) -> Any:
    return (await response_service.get(session, principal, response_id)).body


@router.delete("/{response_id}")
async def delete_response(
    response_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    found = await response_service.get(session, principal, response_id)
    await response_service.repository(session, principal).remove(found)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    session: DbSession,
    principal: Principal,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = Query(None, max_length=128),
) -> dict[str, Any]:
    """The items the response was made from (its own input, after any `previous_response_id`
    history), newest first by default, paged by item id as at OpenAI."""
    found = await response_service.get(session, principal, response_id)
    rows = await response_service.repository(session, principal).items(found)
    items = [row.item for row in rows if not row.output]
    return item_page(items, limit=limit, order=order, after=after, within="this response")


def item_page(
    items: list[dict[str, Any]], *, limit: int, order: str, after: str | None, within: str
) -> dict[str, Any]:
    """A page of items in OpenAI's list shape, `after` an item id, newest first for `desc`."""
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise NotFound(f"No item with id {after!r} in {within}.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > limit,
    }
