"""`GET /v1/alerts`: the budget alerts a tenant's limits fired, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from api.alert.repository import AlertRepository
from api.alert.service import payload
from api.deps import DbSession, MasterPrincipal
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


@router.get("")
async def list_alerts(
    session: DbSession,
    principal: MasterPrincipal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
) -> dict[str, Any]:
    repository = AlertRepository(session, principal.tenant_id)
    page = await repository.paginate(repository.base(), limit=limit, cursor=cursor)
    return list_body([payload(alert) for alert in page.items], page)
