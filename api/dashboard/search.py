"""Search: the tenant's thread messages by meaning, through `POST /v1/search`'s own service."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.dashboard.render import DashboardRoute, page
from api.dashboard.session import SignedIn
from api.errors import InvalidRequest
from api.search import service as search_service
from api.search.runtime import Search
from api.search.schemas import MAX_QUERY_CHARS, SearchCreate

router = APIRouter(prefix="/search", route_class=DashboardRoute)


@router.get("")
async def search_page(
    request: Request,
    signed: SignedIn,
    q: str = Query("", max_length=MAX_QUERY_CHARS),
    role: Literal["", "user", "assistant", "tool"] = "",
) -> Response:
    runtime: Search = request.state.search
    hits = None
    if q.strip():
        if runtime.nearest is None:
            raise InvalidRequest("Search is turned off on this server (TOLLGATE_SEARCH_ENABLED).")
        query = SearchCreate(query=q, limit=20, role=role or None)
        hits = await search_service.search(
            request.state.sessionmaker, signed.principal, query, runtime
        )
    return page(
        request, signed, "search.html", nav="search", q=q, role=role, hits=hits,
        enabled=runtime.nearest is not None,
    )  # fmt: skip
