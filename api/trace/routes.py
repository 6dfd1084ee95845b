"""`GET /v1/traces/{id}`: where one request's time went. A master key reads its tenant's
traces, a standard key only its own; anything else, another tenant's included, is a 404."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import DbSession, Principal
from api.errors import NotFound
from api.gateway.relay import JSONBody
from api.trace import service
from api.trace.repository import TraceRepository

router = APIRouter(tags=["traces"])


@router.get("/v1/traces/{trace_id:path}")  # any printable id, "/" included
async def get_trace(trace_id: str, session: DbSession, principal: Principal) -> Response:
    found = None
    if len(trace_id) <= 128:
        repository = TraceRepository(session, principal.tenant_id)
        found = await repository.find(trace_id, None if principal.is_master else principal.key_id)
    if found is None:
        raise NotFound(f"No trace with id {trace_id[:128]!r}.", param="id")
    return JSONBody(orjson.dumps(service.render(*found)))
