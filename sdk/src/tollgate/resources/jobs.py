"""`client.jobs`: a model request or a thread turn run later by a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from tollgate._errors import JobTimeoutError
from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.job import Job, JobStatus

_PATH = "/v1/jobs"
DEFAULT_WAIT_SECONDS = 600.0
DEFAULT_POLL_SECONDS = 1.0


def _submit(
    endpoint: str,
    body: Mapping[str, Any],
    webhook_url: str | NotGiven,
    metadata: Mapping[str, str] | NotGiven,
    idempotency_key: str | NotGiven,
) -> Call:
    payload = {
        "endpoint": endpoint,
        "body": dict(body),
        **given(
            webhook_url=webhook_url,
            metadata=dict(metadata) if isinstance(metadata, Mapping) else metadata,
        ),
    }
    return Call("POST", _PATH, json=payload, idempotency_key=idempotency_key)


def _list(limit: int | NotGiven, cursor: str | NotGiven, status: JobStatus | NotGiven) -> Call:
    return Call("GET", _PATH, params=given(limit=limit, cursor=cursor, status=status))


def _get(job_id: str) -> Call:
    return Call("GET", f"{_PATH}/{segment(job_id)}")


class Jobs(SyncResource):
    def submit(
        self,
        *,
        endpoint: str,
        body: Mapping[str, Any],
        webhook_url: str | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Job:
        """Queue `body` for `endpoint` (`/v1/chat/completions`, `/v1/messages`,
        `/v1/responses` or `/v1/threads/{id}/messages`); it is checked now as that endpoint
        would check it. With `webhook_url`, the finished job is POSTed there, signed with the
        tenant's webhook secret. The same `idempotency_key` returns the same job."""
        call = _submit(endpoint, body, webhook_url, metadata, idempotency_key)
        return self._one(call, Job)

    def retrieve(self, job_id: str) -> Job:
        return self._one(_get(job_id), Job)

    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        status: JobStatus | NotGiven = NOT_GIVEN,
    ) -> SyncPage[Job]:
        """Jobs, newest first: a standard key's own, a master key's whole tenant's."""
        return self._page(_list(limit, cursor, status), Job)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job (a running one is a `ConflictError`)."""
        return self._one(Call("DELETE", f"{_PATH}/{segment(job_id)}"), Job)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = DEFAULT_WAIT_SECONDS,
        poll_interval: float = DEFAULT_POLL_SECONDS,
    ) -> Job:
        """Poll until the job has `succeeded`, `failed` or been `cancelled`, and return it;
        `JobTimeoutError` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.retrieve(job_id)
            if job.done:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobTimeoutError(job, timeout)
            time.sleep(min(poll_interval, left))


class AsyncJobs(AsyncResource):
    async def submit(
        self,
        *,
        endpoint: str,
        body: Mapping[str, Any],
        webhook_url: str | NotGiven = NOT_GIVEN,
        metadata: Mapping[str, str] | NotGiven = NOT_GIVEN,
        idempotency_key: str | NotGiven = NOT_GIVEN,
    ) -> Job:
        """Queue `body` for `endpoint`; the same `idempotency_key` returns the same job."""
        call = _submit(endpoint, body, webhook_url, metadata, idempotency_key)
        return await self._one(call, Job)

    async def retrieve(self, job_id: str) -> Job:
        return await self._one(_get(job_id), Job)

    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        status: JobStatus | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[Job]:
        """Jobs, newest first."""
        return self._page(_list(limit, cursor, status), Job)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued job (a running one is a `ConflictError`)."""
        return await self._one(Call("DELETE", f"{_PATH}/{segment(job_id)}"), Job)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float = DEFAULT_WAIT_SECONDS,  # noqa: ASYNC109 - a polling deadline, as in wait()
        poll_interval: float = DEFAULT_POLL_SECONDS,
    ) -> Job:
        """Poll until the job is done and return it; `JobTimeoutError` after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.retrieve(job_id)
            if job.done:
                return job
            left = deadline - loop.time()
            if left <= 0:
                raise JobTimeoutError(job, timeout)
            await asyncio.sleep(min(poll_interval, left))
