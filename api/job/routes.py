"""`/v1/jobs`: a model request or thread turn run later, by a worker (SPEC §5.7)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from api.db import after_commit
from api.deps import DbSession, Principal
from api.idempotency import service as idempotency
from api.job import runner
from api.job import service as job_service
from api.job.schemas import JobCreate, JobRead
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("", status_code=202, response_model=JobRead)
async def submit_job(
    request: Request,
    data: JobCreate,
    session: DbSession,
    principal: Principal,
    idempotency_key: str | None = Header(None, max_length=255),
) -> JobRead | JSONResponse:
    """Checked now as the endpoint would check it; run by a worker after the commit. A retry
    with the same `Idempotency-Key` (per key) gets the same job, not a second one."""
    box = request.state.secret_box
    route = f"POST /v1/jobs {principal.key_id}"
    if idempotency_key is not None:
        body_hash = idempotency.request_hash(await request.body())
        replay = await idempotency.claim(
            session, principal.tenant_id, route, idempotency_key, body_hash, box
        )
        if replay is not None:
            job = await job_service.get_job(session, principal, replay.body["id"])
            return JSONResponse(
                job_service.render(job).model_dump(mode="json"), 202,
                headers={"idempotent-replayed": "true"},
            )  # fmt: skip
    settings = request.state.settings
    job = await job_service.submit(
        session, request.state.gateway, principal, data,
        allow_private_webhooks=settings.allow_private_webhooks,
    )  # fmt: skip
    rendered = job_service.render(job)
    if idempotency_key is not None:
        await idempotency.remember(
            session, principal.tenant_id, route, idempotency_key, 202, {"id": str(job.id)}, box
        )
    queue = request.state.turns.jobs
    job_id = str(job.id)

    async def enqueue() -> None:  # a queue that is down now: the recovery sweep sends it later
        try:
            await queue.enqueue(runner.RUN, job_id, job_id=runner.queue_id(job_id))
        except Exception:
            runner.logger.warning("job %s was stored but not queued; it will be swept", job_id)

    after_commit(session, enqueue)
    return rendered


@router.get("", response_model=None)
async def list_jobs(
    session: DbSession,
    principal: Principal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
) -> dict[str, Any]:
    page = await job_service.list_jobs(
        session, principal, status=status, limit=limit, cursor=cursor
    )
    return list_body([job_service.render(j).model_dump(mode="json") for j in page.items], page)


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: str, session: DbSession, principal: Principal) -> JobRead:
    return job_service.render(await job_service.get_job(session, principal, job_id))


@router.delete("/{job_id}", response_model=JobRead)
async def cancel_job(job_id: str, session: DbSession, principal: Principal) -> JobRead:
    """Cancels a queued job; a running one is a 409."""
    return job_service.render(await job_service.cancel(session, principal, job_id))
