"""`/v1/keys`: a tenant's master key mints and manages one key per end-user (SPEC §5.1)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service as key_service
from api.auth.models import ApiKey
from api.auth.schemas import KeyCreate, KeyRead, KeyRotate, KeyUpdate
from api.db import after_commit
from api.deps import DbSession, MasterPrincipal, Pepper, Principal
from api.idempotency import service as idempotency
from api.kit.ids import parse_id
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyRead, response_model_exclude_unset=True)
async def create_key(
    request: Request,
    data: KeyCreate,
    session: DbSession,
    principal: MasterPrincipal,
    pepper: Pepper,
) -> KeyRead | JSONResponse:
    """A retry with the same `Idempotency-Key` gets the first answer (the same secret), not a
    second key."""
    box = request.state.secret_box
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        body_hash = idempotency.request_hash(await request.body())
        replay = await idempotency.claim(
            session, principal.tenant_id, "POST /v1/keys", idempotency_key, body_hash, box
        )
        if replay is not None:
            return JSONResponse(
                replay.body, replay.status_code, headers={"idempotent-replayed": "true"}
            )
    key, secret = await key_service.create_key(session, pepper, principal.tenant_id, data)
    created = await key_service.render_key(None, key, secret=secret)
    if idempotency_key is not None:
        body = created.model_dump(mode="json", exclude_unset=True)
        await idempotency.remember(
            session, principal.tenant_id, "POST /v1/keys", idempotency_key, 201, body, box
        )
    return created


@router.get("")
async def list_keys(
    session: DbSession,
    principal: MasterPrincipal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
) -> dict[str, Any]:
    page = await key_service.list_keys(session, principal, limit=limit, cursor=cursor)
    data = [
        (await key_service.render_key(None, key)).model_dump(mode="json", exclude_unset=True)
        for key in page.items
    ]
    return list_body(data, page)


@router.get("/self", response_model=KeyRead, response_model_exclude_unset=True)
async def get_own_key(session: DbSession, principal: Principal) -> KeyRead:
    return await key_service.render_key(session, principal.key)


@router.get("/{key_id}", response_model=KeyRead, response_model_exclude_unset=True)
async def get_key(key_id: str, session: DbSession, principal: MasterPrincipal) -> KeyRead:
    key = await key_service.get_key(session, principal, parse_id(key_id, "key"))
    return await key_service.render_key(session, key)


def _changed(request: Request, session: AsyncSession, key: ApiKey, *, limits: bool = False) -> None:
    """After the commit, drop the key from every process's cache (and recount its spend)."""
    state = request.state

    async def hook() -> None:
        await state.key_cache.key_changed(key.id)
        if limits:
            await state.gateway.budget.limits_changed(key.id)

    after_commit(session, hook)


@router.patch("/{key_id}", response_model=KeyRead, response_model_exclude_unset=True)
async def update_key(
    request: Request, key_id: str, data: KeyUpdate, session: DbSession, principal: MasterPrincipal
) -> KeyRead:
    key = await key_service.update_key(session, principal, parse_id(key_id, "key"), data)
    _changed(
        request,
        session,
        key,
        limits=bool({"limits", "max_spend_usd", "rpm", "tpm"} & data.model_fields_set),
    )
    return await key_service.render_key(session, key)


@router.delete("/{key_id}", response_model=KeyRead, response_model_exclude_unset=True)
async def revoke_key(
    request: Request, key_id: str, session: DbSession, principal: MasterPrincipal
) -> KeyRead:
    key = await key_service.revoke_key(session, principal, parse_id(key_id, "key"))
    _changed(request, session, key)
    return await key_service.render_key(None, key)


@router.post("/{key_id}/rotate", response_model=KeyRead, response_model_exclude_unset=True)
async def rotate_key(
    request: Request,
    key_id: str,
    session: DbSession,
    principal: MasterPrincipal,
    pepper: Pepper,
    data: KeyRotate | None = Body(default=None),
) -> KeyRead:
    grace_seconds = data.grace_seconds if data else 0
    key, secret = await key_service.rotate_key(
        session, pepper, principal, parse_id(key_id, "key"), grace_seconds
    )
    _changed(request, session, key)
    return await key_service.render_key(None, key, secret=secret)
