"""Async jobs (SPEC §5.7): submit, read, list, cancel. Running them is `api.job.runner`.

A job's body is exactly what its synchronous endpoint takes, and it is checked as that endpoint
would check it, now: a bad body is a 400 at submit, not a failed job later. What can change
until the job runs (the key's status, its caps, the upstream) is checked when it runs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.service import Principal
from api.error_handlers import validation_error
from api.errors import AppError, Conflict, InvalidRequest, NotFound
from api.gateway.dialects import entry
from api.gateway.dialects.anthropic import routes as messages_routes
from api.gateway.dialects.openai import routes as chat_routes
from api.gateway.dialects.responses import routes as responses_routes
from api.gateway.pipeline import Gateway
from api.job.models import QUEUED, Job
from api.job.repository import JobRepository
from api.job.schemas import JobCreate, JobRead, JobUsage
from api.kit.ids import parse_id
from api.kit.money import micros_to_usd
from api.kit.pagination import Page
from api.kit.webhooks import check_url
from api.response import service as response_service
from api.tenant.models import Tenant
from api.thread import service as thread_service
from api.thread.schemas import MessageCreate
from api.tool import service as tool_service

RESPONSES = responses_routes.RESPONSES_PATH
BACKGROUND_KEY = "background_response_id"  # in a job's metadata: the response it makes
MODEL_ENDPOINTS: dict[str, entry.Endpoint] = {
    e.path: e for e in (chat_routes.ENDPOINT, messages_routes.ENDPOINT, responses_routes.ENDPOINT)
}
THREAD_TURN = re.compile(r"/v1/threads/([^/]+)/messages")
ENDPOINTS_NAMED = ", ".join([*MODEL_ENDPOINTS, "/v1/threads/{id}/messages"])


@dataclass(frozen=True, slots=True)
class Target:
    """What a job's `endpoint` names: a model endpoint, or a thread's turns."""

    model: entry.Endpoint | None = None
    thread_id: uuid.UUID | None = None


def target(endpoint: str) -> Target:
    if (model := MODEL_ENDPOINTS.get(endpoint)) is not None:
        return Target(model=model)
    if match := THREAD_TURN.fullmatch(endpoint):
        try:
            return Target(thread_id=uuid.UUID(match.group(1)))
        except ValueError:
            pass
    raise InvalidRequest(
        f"endpoint: {endpoint!r} cannot run as a job; one of {ENDPOINTS_NAMED}.", param="endpoint"
    )


def _in_body(error: AppError) -> AppError:
    """The endpoint's own error, its `param` placed under the job's `body`."""
    if isinstance(error, InvalidRequest):
        param = f"body.{error.param}" if error.param else "body"
        return InvalidRequest(f"body: {error.message}", param=param)
    return error


def _no_stream() -> InvalidRequest:
    return InvalidRequest(
        "body.stream: a job does not stream; read its result with GET /v1/jobs/{id} or have it "
        "POSTed to webhook_url.",
        param="body.stream",
    )


def turn_request(body: dict[str, object]) -> MessageCreate:
    try:
        return MessageCreate.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", "body", *e["loc"])} for e in exc.errors()]
        raise validation_error(RequestValidationError(errors)) from None


async def check_body(
    session: AsyncSession, gateway: Gateway, principal: Principal, data: JobCreate
) -> None:
    """As the synchronous endpoint would check `data.body` before calling a model."""
    job_target = target(data.endpoint)
    body = data.body
    if job_target.model is not None:
        try:
            stream, _ = job_target.model.check(body, gateway.unknown_fields)
            gateway.catalog.resolve(body["model"])
        except AppError as error:
            raise _in_body(error) from None
        if stream:
            raise _no_stream()
        return
    assert job_target.thread_id is not None
    request = turn_request(body)
    if request.stream:
        raise _no_stream()
    await thread_service.get_thread(session, principal, job_target.thread_id)
    try:
        await tool_service.resolve(session, principal.tenant_id, request.tools or [])
        gateway.catalog.resolve(request.model)
    except AppError as error:
        raise _in_body(error) from None


async def submit(
    session: AsyncSession,
    gateway: Gateway,
    principal: Principal,
    data: JobCreate,
    *,
    allow_private_webhooks: bool,
) -> Job:
    await check_body(session, gateway, principal, data)
    if data.webhook_url is not None:
        await check_url(data.webhook_url, allow_private=allow_private_webhooks, param="webhook_url")
        tenant = await session.get(Tenant, principal.tenant_id)
        if tenant is None or not tenant.webhook_secret:
            raise InvalidRequest(
                "webhook_url: completions are signed with the tenant's webhook secret; create "
                "one first (POST /v1/settings/webhook-secret).",
                param="webhook_url",
            )
    job = Job(
        tenant_id=principal.tenant_id, key_id=principal.key_id, endpoint=data.endpoint,
        body=data.body, webhook_url=data.webhook_url, metadata_=data.metadata or {},
        status=QUEUED, attempts=0, webhook_status="pending" if data.webhook_url else None,
    )  # fmt: skip
    session.add(job)
    await session.flush()
    return job


async def submit_background_response(
    session: AsyncSession, gateway: Gateway, principal: Principal, body: dict[str, Any]
) -> tuple[Job, dict[str, Any]]:
    """`POST /v1/responses` with `background: true`: a job that makes the response, and the
    stored response (`queued`) its client polls with `GET /v1/responses/{id}` meanwhile."""
    if body.get("store") is False:
        raise InvalidRequest("store: a background response is stored; drop store: false.",
                             param="store")  # fmt: skip
    if body.get("stream"):
        raise InvalidRequest(
            "stream: a background response does not stream here; poll GET /v1/responses/{id}.",
            param="stream",
        )
    response_id = response_service.new_id()
    job_body = {k: v for k, v in body.items() if k != "background"}
    data = JobCreate(endpoint=RESPONSES, body=job_body, metadata={BACKGROUND_KEY: response_id})
    try:
        job = await submit(session, gateway, principal, data, allow_private_webhooks=False)
    except InvalidRequest as error:  # named as the endpoint names it, not under `body.`
        param = (error.param or "").removeprefix("body.") or None
        raise InvalidRequest(error.message.removeprefix("body: "), param=param) from None
    shown = await response_service.hold_background(
        session, principal, response_id, job_body, retention_days=gateway.response_retention_days
    )
    return job, shown


def jobs(session: AsyncSession, principal: Principal) -> JobRepository:
    owner = None if principal.is_master else principal.key_id
    return JobRepository(session, principal.tenant_id, owner)


async def get_job(session: AsyncSession, principal: Principal, job_id: str) -> Job:
    job = await jobs(session, principal).get(parse_id(job_id, "job"))
    if job is None:
        raise NotFound(f"No job with id {job_id}.", param="id")
    return job


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Job]:
    repository = jobs(session, principal)
    statement = repository.base()
    if status is not None:
        statement = statement.where(Job.status == status)
    return await repository.paginate(statement, limit=limit, cursor=cursor)


async def cancel(session: AsyncSession, principal: Principal, job_id: str) -> Job:
    """A queued job is cancelled; a running one is a 409 (it cannot be called back); a finished
    one is returned as it is (cancelling twice is not an error)."""
    job = await get_job(session, principal, job_id)
    if job.status == QUEUED and await jobs(session, principal).cancel(job.id):
        await session.refresh(job)
        return job
    await session.refresh(job)
    if job.status == "running":
        raise Conflict("The job is already running and cannot be cancelled.", param="id")
    return job


def render(job: Job) -> JobRead:
    usage = None
    if job.usage is not None:
        cost = int(job.usage.get("cost_micros", 0))
        usage = JobUsage(
            input_tokens=int(job.usage.get("input_tokens", 0)),
            output_tokens=int(job.usage.get("output_tokens", 0)),
            cost_micros=cost,
            cost_usd=micros_to_usd(cost),
        )
    return JobRead(
        id=str(job.id), key_id=str(job.key_id), endpoint=job.endpoint, status=job.status,
        attempts=job.attempts, status_code=job.status_code, result=job.result, error=job.error,
        usage=usage, metadata=job.metadata_, webhook_url=job.webhook_url,
        webhook_status=job.webhook_status,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
    )  # fmt: skip
