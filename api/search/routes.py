"""`POST /v1/search`: semantic search over the caller's thread messages (SPEC §5.6)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import GatewayPrincipal
from api.search import service as search_service
from api.search.runtime import Search
from api.search.schemas import SearchCreate, SearchListRead

router = APIRouter(prefix="/v1/search", tags=["search"])


# No request session: embedding the query may take a worker's round trip, so the service
# opens short sessions of its own (as thread turns do).
@router.post("", response_model=SearchListRead)
async def search_messages(
    request: Request, data: SearchCreate, principal: GatewayPrincipal
) -> SearchListRead:
    runtime: Search = request.state.search
    hits = await search_service.search(request.state.sessionmaker, principal, data, runtime)
    return SearchListRead(data=hits)
