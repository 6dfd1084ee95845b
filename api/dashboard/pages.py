"""Threads, tools, jobs, billing, providers and settings: the routers of each, and the small
pages (tools, jobs, providers) themselves.

Reads go through each domain's service, scoped to the signed-in tenant; the one write here
(rotating a tool's signing secret) calls `/v1/tools`'s own handler.
"""

from __future__ import annotations

from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import billing, tenant_settings, threads
from api.dashboard.forms import Cursor, page_limit, pretty
from api.dashboard.render import DashboardRoute, page
from api.dashboard.session import SignedIn, posted_form
from api.deps import DbSession
from api.errors import InvalidRequest
from api.job import service as job_service
from api.job.models import STATUSES
from api.provider import service as provider_service
from api.provider.schemas import ProviderName
from api.tool import routes as tool_routes
from api.tool import service as tool_service
from api.tool.schemas import ToolRead

router = APIRouter(route_class=DashboardRoute)
router.include_router(threads.router)
router.include_router(billing.router)
router.include_router(tenant_settings.router)


# --- tools ---------------------------------------------------------------------------------


async def _tools_page(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    *,
    cursor: Cursor = None,
    limit: str | None = None,
    rotated: ToolRead | None = None,
) -> Response:
    size = page_limit(limit)
    listed = await tool_service.list_tools(session, signed.principal, limit=size, cursor=cursor)
    notice = "New signing secret made. Copy it now: it is not shown again." if rotated else None
    return page(
        request, signed, "tools.html", tools=listed.items, page_of=listed, limit=size,
        rotated=rotated, notice=notice, nav="tools",
    )  # fmt: skip


@router.get("/tools")
async def list_tools(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
    limit: str | None = None,
) -> Response:
    return await _tools_page(request, session, signed, cursor=cursor, limit=limit)


@router.post("/tools/{tool_id}/rotate-secret")
async def rotate_tool_secret(
    request: Request, tool_id: str, session: DbSession, signed: SignedIn
) -> Response:
    await posted_form(request, signed)
    rotated = await tool_routes.rotate_tool_secret(
        tool_id, session, signed.principal, request.state.secret_box
    )
    # The secret is in this answer and never again: no redirect can carry it.
    return await _tools_page(request, session, signed, rotated=rotated)


# --- jobs ----------------------------------------------------------------------------------


@router.get("/jobs")
async def list_jobs(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
    limit: str | None = None,
    status: str | None = None,
) -> Response:
    status = status or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(STATUSES)}.", param="status")
    size = page_limit(limit)
    listed = await job_service.list_jobs(
        session, signed.principal, status=status, limit=size, cursor=cursor
    )
    jobs = [job_service.render(job) for job in listed.items]
    return page(
        request, signed, "jobs.html", jobs=jobs, page_of=listed, limit=size, status=status,
        statuses=STATUSES, nav="jobs",
    )  # fmt: skip


@router.get("/jobs/{job_id}")
async def show_job(request: Request, job_id: str, session: DbSession, signed: SignedIn) -> Response:
    job = job_service.render(await job_service.get_job(session, signed.principal, job_id))
    shown = {
        name: pretty(value)
        for name, value in (("result", job.result), ("error", job.error))
        if value is not None
    }
    return page(request, signed, "job.html", job=job, shown=shown, nav="jobs")


# --- providers (BYOK) ----------------------------------------------------------------------


@router.get("/providers")
async def list_providers(request: Request, session: DbSession, signed: SignedIn) -> Response:
    """Every provider a tenant can bring its own key for: its key's state (last four at most),
    or that requests use the operator's account."""
    stored = await provider_service.list_all(session, signed.principal.tenant_id)
    own = {read.name: read for read in map(provider_service.render, stored)}
    rows = [{"name": name, "own": own.get(name)} for name in get_args(ProviderName)]
    return page(request, signed, "providers.html", rows=rows, nav="providers")
