"""Running an async job: the task `job.run`, the completion webhook `job.notify`, and the sweep
`job.recover` (SPEC §5.7).

`run` claims the job (queued → running, one more attempt), runs its body through the same
path as the synchronous endpoint (`entry.serve`: access control, caps, failover, metering, one
usage event per call; or a thread turn, tools included), and stores the answer before it returns
to the queue. So a job whose upstream call completed and was stored is never sent again; only
an answer lost with a dying worker is asked for again, by the next attempt. The reservation is
made when the job runs, not at submit: a job refused for budget ends `failed` with the error
body the synchronous call would have got.

A thread turn runs under the Idempotency-Key `job:<id>`: an attempt that follows one which
persisted the turn replays it instead of calling the model again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from arq.worker import Retry
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service as auth_service
from api.auth.repository import ApiKeyRepository
from api.auth.service import Principal
from api.background import Task
from api.db import session_scope
from api.error_handlers import render_error
from api.errors import AppError, InternalError, UpstreamTimeout
from api.gateway.dialects import entry
from api.gateway.pipeline import Call
from api.job import repository
from api.job import service as job_service
from api.job.models import FAILED, SUCCEEDED, Job
from api.kit.time import utcnow
from api.kit.webhook_client import refused
from api.kit.webhooks import post_signed
from api.response import service as response_service
from api.tenant.models import Tenant
from api.thread import turns

logger = logging.getLogger("tollgate.jobs")

RUN, NOTIFY, RECOVER = "job.run", "job.notify", "job.recover"
MAX_ATTEMPTS = 3  # claims of one job; past it, it fails rather than loop on a poison body
RETRY_SECONDS = (2, 10, 30)  # after an infrastructure failure (the database, the queue)
NOTIFY_TRIES = 6
NOTIFY_BACKOFF_SECONDS = (1, 5, 30, 120, 600)
NOTIFY_TIMEOUT_SECONDS = 10.0
QUEUED_GRACE_SECONDS = 60.0  # a queued job older than this was lost by the queue: sent again
QUEUE_SLACK_SECONDS = 10.0  # the queue's timeout for a run is the job's plus this
MISSED_BEATS = 3  # a running job whose row has not been touched for this many heartbeats


def queue_id(job_id: uuid.UUID | str) -> str:
    return f"job:{job_id}"


async def run(ctx: dict[str, Any], job_id: str) -> str:
    timeout = ctx["settings"].job_timeout_seconds
    sessionmaker = ctx["sessionmaker"]
    try:
        async with session_scope(sessionmaker) as session:
            job = await repository.claim_unscoped(
                session, uuid.UUID(job_id), running_before=_dead_before(ctx)
            )
            if job is None:
                return "skipped"  # finished, cancelled, or running elsewhere
            session.expunge(job)
    except Exception as exc:
        raise Retry(defer=RETRY_SECONDS[min(ctx.get("job_try", 1), 3) - 1]) from exc
    if job.attempts > MAX_ATTEMPTS:
        error = AppError(f"The job was interrupted {MAX_ATTEMPTS} times and was given up.")
        outcome = _failed(job, error, [])
    else:
        beating = asyncio.create_task(_heartbeat(ctx, job), name=f"job-heartbeat-{job.id}")
        try:
            async with asyncio.timeout(timeout):
                outcome = await _execute(ctx, job)
        except TimeoutError:
            outcome = _failed(job, UpstreamTimeout("The job did not finish in time."), [])
        except Retry:  # nothing was asked of a model: the job is queued again, as it was
            with contextlib.suppress(Exception):  # else the sweep finds it without a heartbeat
                async with session_scope(sessionmaker) as session:
                    await repository.release_unscoped(session, job.id, job.attempts)
            raise
        finally:
            beating.cancel()
    try:
        async with session_scope(sessionmaker) as session:
            stored = await repository.finish_unscoped(session, job.id, job.attempts, outcome)
            background = job.metadata_.get(job_service.BACKGROUND_KEY)
            if stored and background and outcome["status"] == FAILED:
                principal = await _owner(session, job)
                if principal is not None:
                    await response_service.background_failed(
                        session, principal, background, outcome["error"]
                    )
    except Exception as exc:  # the answer is lost: the next attempt asks for it again
        raise Retry(defer=RETRY_SECONDS[min(ctx.get("job_try", 1), 3) - 1]) from exc
    if stored and job.webhook_url:
        await ctx["queue"].enqueue(NOTIFY, str(job.id), job_id=f"job-notify:{job.id}")
    return str(outcome["status"])


async def _heartbeat(ctx: dict[str, Any], job: Job) -> None:
    """While the job runs, its row says so every `job_heartbeat_seconds`: a row that stops
    saying so belongs to a worker that died, and the sweep runs the job again."""
    every = ctx["settings"].job_heartbeat_seconds
    while True:
        await asyncio.sleep(every)
        try:
            async with session_scope(ctx["sessionmaker"]) as session:
                await repository.beat_unscoped(session, job.id, job.attempts)
        except Exception:  # the next beat tries again; missing three lets the job be retried
            logger.warning("job %s: heartbeat not recorded", job.id)


async def _execute(ctx: dict[str, Any], job: Job) -> dict[str, Any]:
    gateway = ctx["gateway"]
    request_id = f"job_{job.id.hex}_{job.attempts}"
    calls: list[Call] = []
    try:
        async with session_scope(ctx["sessionmaker"]) as session:
            principal = await auth_service.principal_for_key(session, job.tenant_id, job.key_id)
        target = job_service.target(job.endpoint)
        if target.model is not None:
            # A background response is stored under the id its client was given at submit.
            token = response_service.BACKGROUND_ID.set(
                job.metadata_.get(job_service.BACKGROUND_KEY)
            )
            try:
                response = await entry.serve(
                    gateway, principal, request_id, target.model, dict(job.body), calls=calls
                )
            finally:
                response_service.BACKGROUND_ID.reset(token)
            return _succeeded(response.status_code, orjson.loads(bytes(response.body)), calls)
        assert target.thread_id is not None
        turn_context: turns.TurnContext = ctx["turns"]
        turn = await turns.prepare(
            turn_context, principal, target.thread_id, job_service.turn_request(job.body),
            idempotency_key=f"job:{job.id}", request_id=request_id,
        )  # fmt: skip
        message = await turns.send(turn_context, turn)
        usage = message.usage
        return {
            "status": SUCCEEDED, "status_code": 200, "result": message.model_dump(mode="json"),
            "error": None,
            "usage": {
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "cost_micros": usage.cost_micros if usage else 0,
            },
        }  # fmt: skip
    except AppError as error:
        return _failed(job, error, calls)
    except Exception as exc:
        if calls:  # a model was called: its answer may be billed, so it is not asked again
            logger.exception("job %s failed after its model call", job.id)
            return _failed(job, InternalError(), calls)
        raise Retry(defer=RETRY_SECONDS[0]) from exc  # before any call (the database, say)


async def _owner(session: AsyncSession, job: Job) -> Principal | None:
    """The job's key as a principal, whatever its status now (to update what it owns)."""
    found = await ApiKeyRepository(session, job.tenant_id).with_tenant_limits(job.key_id)
    return None if found is None else Principal(job.tenant_id, found[0], tuple(found[1]))


def _usage(calls: list[Call]) -> dict[str, int]:
    total = {"input_tokens": 0, "output_tokens": 0, "cost_micros": 0}
    for call in calls:
        if call.usage is not None:
            total["input_tokens"] += call.usage.input_tokens
            total["output_tokens"] += call.usage.output_tokens
        total["cost_micros"] += call.cost_micros
    return total


def _succeeded(status_code: int, result: Any, calls: list[Call]) -> dict[str, Any]:
    return {"status": SUCCEEDED, "status_code": status_code, "result": result, "error": None,
            "usage": _usage(calls)}  # fmt: skip


def _failed(job: Job, error: AppError, calls: list[Call]) -> dict[str, Any]:
    body = orjson.loads(bytes(render_error(job.endpoint, error).body))
    return {"status": FAILED, "status_code": error.status_code, "result": None, "error": body,
            "usage": _usage(calls)}  # fmt: skip


async def notify(ctx: dict[str, Any], job_id: str) -> str:
    """POST the finished job to its `webhook_url`, signed with the tenant's webhook secret
    (SPEC §5.5's signature), through the client that checks every address at connect time."""
    sessionmaker = ctx["sessionmaker"]
    async with session_scope(sessionmaker) as session:
        job = await repository.get_unscoped(session, uuid.UUID(job_id))
        if job is None or job.webhook_url is None or job.webhook_status != "pending":
            return "skipped"
        tenant = await session.get(Tenant, job.tenant_id)
        sealed = tenant.webhook_secret if tenant is not None else None
        rendered = job_service.render(job).model_dump(mode="json")
        body = orjson.dumps({"type": "job.completed", "job": rendered})
        url = job.webhook_url
    error = "no webhook secret" if sealed is None else None
    if sealed is not None:
        error = await _post(ctx["webhooks"], url, ctx["secret_box"].open(sealed), body)
    job_try = int(ctx.get("job_try", 1))
    final = error is None or job_try >= NOTIFY_TRIES or error.startswith("refused")
    async with session_scope(sessionmaker) as session:
        await repository.webhook_attempted_unscoped(
            session, uuid.UUID(job_id), error=error,
            status=("delivered" if error is None else "failed") if final else "pending",
        )  # fmt: skip
    if not final:
        raise Retry(defer=NOTIFY_BACKOFF_SECONDS[min(job_try, len(NOTIFY_BACKOFF_SECONDS)) - 1])
    return "delivered" if error is None else "failed"


async def _post(client: httpx.AsyncClient, url: str, secret: str, body: bytes) -> str | None:
    try:
        status = await post_signed(
            client, url, secret, body, timeout_seconds=NOTIFY_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        if refused(exc):
            return "refused: the host resolves to a private or loopback address"
        return type(exc).__name__[:200]
    return None if 200 <= status < 300 else f"HTTP {status}"


async def recover(ctx: dict[str, Any]) -> int:
    """Send again the jobs the queue lost: queued for longer than a healthy queue keeps them,
    or running with no heartbeat for `MISSED_BEATS` beats (their worker died). The claim
    decides who runs them."""
    now = time.time()
    async with session_scope(ctx["sessionmaker"]) as session:
        stale = await repository.stale_unscoped(
            session,
            queued_before=max(_ago(QUEUED_GRACE_SECONDS), ctx.get("sole_runner_since", _EPOCH)),
            running_before=_dead_before(ctx),
            limit=500,
        )
    for job_id in stale:
        # Not the submit's queue id: that one may be kept as done by the queue for an hour.
        await ctx["queue"].enqueue(RUN, str(job_id), job_id=f"{queue_id(job_id)}:{int(now)}")
    return len(stale)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dead_before(ctx: dict[str, Any]) -> datetime:
    """A running job whose last heartbeat is older than this is taken for dead. Where this
    process is the only one that runs jobs (the embedded default: `sole_runner_since`, its
    start), that is every job left running by an earlier process, at once."""
    since: datetime = ctx.get("sole_runner_since", _EPOCH)
    return max(_ago(MISSED_BEATS * ctx["settings"].job_heartbeat_seconds), since)


def _ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def tasks(job_timeout_seconds: float) -> list[Task]:
    return [
        # arq's tries only re-deliver; the job's own attempt count decides when to give up.
        Task(RUN, run, timeout_seconds=job_timeout_seconds + QUEUE_SLACK_SECONDS,
             max_tries=MAX_ATTEMPTS + 5, keep_result_seconds=3600),
        Task(NOTIFY, notify, timeout_seconds=NOTIFY_TIMEOUT_SECONDS + 5, max_tries=NOTIFY_TRIES),
        Task(RECOVER, recover, timeout_seconds=60, max_tries=1, every_seconds=10),
    ]  # fmt: skip
