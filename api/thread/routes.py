"""`/v1/threads`: conversations Tollgate keeps for the tenant (SPEC §5.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.db import after_commit
from api.deps import DbSession, Principal, gateway_principal
from api.errors import InvalidRequest
from api.kit.ids import parse_id
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body
from api.search.runtime import Search
from api.thread import service as thread_service
from api.thread import turns
from api.thread.schemas import MessageCreate, MessageRead, ThreadCreate, ThreadRead

router = APIRouter(prefix="/v1/threads", tags=["threads"])


@router.post("", status_code=201, response_model=ThreadRead)
async def create_thread(data: ThreadCreate, session: DbSession, principal: Principal) -> ThreadRead:
    thread = await thread_service.create_thread(session, principal, data)
    return thread_service.render_thread(thread, indexed=True)  # no messages yet


@router.get("")
async def list_threads(
    session: DbSession,
    principal: Principal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
    key_id: str | None = Query(None, max_length=64),
) -> dict[str, Any]:
    owner = parse_id(key_id, "key") if key_id else None
    page = await thread_service.list_threads(
        session, principal, key_id=owner, limit=limit, cursor=cursor
    )
    pending = await thread_service.unindexed(session, principal, [t.id for t in page.items])
    data = [
        thread_service.render_thread(t, indexed=t.id not in pending).model_dump(mode="json")
        for t in page.items
    ]
    return list_body(data, page)


@router.get("/{thread_id}", response_model=ThreadRead)
async def get_thread(thread_id: str, session: DbSession, principal: Principal) -> ThreadRead:
    thread = await thread_service.get_thread(session, principal, parse_id(thread_id, "thread"))
    pending = await thread_service.unindexed(session, principal, [thread.id])
    return thread_service.render_thread(thread, indexed=not pending)


@router.delete("/{thread_id}")
async def delete_thread(
    request: Request, thread_id: str, session: DbSession, principal: Principal
) -> dict[str, Any]:
    thread = await thread_service.delete_thread(session, principal, parse_id(thread_id, "thread"))
    # Its vectors go once the delete is committed (and search never shows them meanwhile).
    search: Search = request.state.search
    after_commit(session, partial(search.thread_deleted, thread.tenant_id, thread.id))
    return {"object": "thread.deleted", "id": str(thread.id), "deleted": True}


@router.get("/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    session: DbSession,
    principal: Principal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    page = await thread_service.list_messages(
        session, principal, parse_id(thread_id, "thread"), limit=limit, cursor=cursor, order=order
    )
    data = [thread_service.render_message(m).model_dump(mode="json") for m in page.items]
    return list_body(data, page)


@router.post("/{thread_id}/messages", response_model=MessageRead)
async def create_message(
    request: Request,
    thread_id: str,
    data: MessageCreate,
    idempotency_key: str | None = Header(None, max_length=255),
) -> Response:
    # No request session: a turn can take minutes (model calls, tool webhooks), so it opens
    # short sessions of its own rather than hold a connection throughout.
    principal = await gateway_principal(request)
    if idempotency_key is not None and not idempotency_key.strip():
        raise InvalidRequest("Idempotency-Key: must not be blank.", param="Idempotency-Key")
    ctx: turns.TurnContext = request.state.turns
    turn = await turns.prepare(
        ctx, principal, parse_id(thread_id, "thread"), data,
        idempotency_key=idempotency_key, request_id=request.state.request_id,
    )  # fmt: skip
    if not data.stream:
        message = await turns.send(ctx, turn)
        return Response(message.model_dump_json(), media_type="application/json")
    events = turns.stream(ctx, turn)
    # The first event is awaited here: what fails before it (the lock, the history, a refused
    # first call) is an ordinary error response, not a stream.
    first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in events:
                yield chunk
        finally:  # a client that left: the turn stops, its lock is released, nothing is kept
            await events.aclose()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
