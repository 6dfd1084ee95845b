"""`/v1/keys`: a tenant's master key mints and manages one key per end-user (SPEC §5.1)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query

from api.auth import service as key_service
from api.auth.schemas import KeyCreate, KeyRead, KeyRotate, KeyUpdate
from api.deps import DbSession, MasterPrincipal, Pepper, Principal
from api.kit.ids import parse_id
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyRead, response_model_exclude_unset=True)
async def create_key(
    data: KeyCreate, session: DbSession, principal: MasterPrincipal, pepper: Pepper
) -> KeyRead:
    key, secret = await key_service.create_key(session, pepper, principal.tenant_id, data)
    return await key_service.render_key(None, key, secret=secret)


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


@router.patch("/{key_id}", response_model=KeyRead, response_model_exclude_unset=True)
async def update_key(
    key_id: str, data: KeyUpdate, session: DbSession, principal: MasterPrincipal
) -> KeyRead:
    key = await key_service.update_key(session, principal, parse_id(key_id, "key"), data)
    return await key_service.render_key(session, key)


@router.delete("/{key_id}", response_model=KeyRead, response_model_exclude_unset=True)
async def revoke_key(key_id: str, session: DbSession, principal: MasterPrincipal) -> KeyRead:
    key = await key_service.revoke_key(session, principal, parse_id(key_id, "key"))
    return await key_service.render_key(None, key)


@router.post("/{key_id}/rotate", response_model=KeyRead, response_model_exclude_unset=True)
async def rotate_key(
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
    return await key_service.render_key(None, key, secret=secret)
