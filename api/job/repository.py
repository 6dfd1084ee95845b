"""All SQL for jobs. A standard key's repository sees only its own jobs; the worker's
`*_unscoped` functions address one job by id, as the queue hands it over."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.job.models import CANCELLED, QUEUED, RUNNING, Job
from api.kit.repository import TenantRepository
from api.kit.time import utcnow


class JobRepository(TenantRepository[Job]):
    """A tenant's jobs; with `owner_key_id` (a standard key) only that key's."""

    model = Job

    def __init__(
        self, session: AsyncSession, tenant_id: uuid.UUID, owner_key_id: uuid.UUID | None
    ) -> None:
        super().__init__(session, tenant_id)
        self.owner_key_id = owner_key_id

    def base(self) -> Select[tuple[Job]]:
        statement = super().base()
        if self.owner_key_id is not None:
            statement = statement.where(Job.key_id == self.owner_key_id)
        return statement

    async def cancel(self, job_id: uuid.UUID) -> bool:
        """Queued → cancelled, atomically: False when a worker claimed it first."""
        now = utcnow()
        statement = (
            update(Job)
            .where(Job.tenant_id == self.tenant_id, Job.id == job_id, Job.status == QUEUED)
            .values(status=CANCELLED, finished_at=now, updated_at=now)
        )
        if self.owner_key_id is not None:
            statement = statement.where(Job.key_id == self.owner_key_id)
        result: Any = await self.session.execute(statement)
        return bool(result.rowcount)


async def claim_unscoped(
    session: AsyncSession, job_id: uuid.UUID, *, running_before: datetime
) -> Job | None:
    """Queued, or running since before `running_before` (its worker died) → running, one more
    attempt; None otherwise (finished, cancelled, or running elsewhere). Atomic: two workers
    never both claim one attempt."""
    now = utcnow()
    statement = (
        update(Job)
        .where(
            Job.id == job_id,
            (Job.status == QUEUED) | ((Job.status == RUNNING) & (Job.updated_at < running_before)),
        )
        .values(status=RUNNING, attempts=Job.attempts + 1, started_at=now, updated_at=now)
        .returning(Job)
    )
    result = await session.execute(statement.execution_options(populate_existing=True))
    return result.scalar_one_or_none()


async def finish_unscoped(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, values: dict[str, Any]
) -> bool:
    """Store the outcome of `attempt`, once: False when another attempt has taken the job."""
    now = utcnow()
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING, Job.attempts == attempt)
        .values(**values, finished_at=now, updated_at=now)
    )
    result: Any = await session.execute(statement)
    return bool(result.rowcount)


async def beat_unscoped(session: AsyncSession, job_id: uuid.UUID, attempt: int) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING, Job.attempts == attempt)
        .values(updated_at=utcnow())
    )


async def release_unscoped(session: AsyncSession, job_id: uuid.UUID, attempt: int) -> None:
    """Running → queued again, for an attempt that did nothing (it is not counted)."""
    await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == RUNNING, Job.attempts == attempt)
        .values(status=QUEUED, attempts=attempt - 1, updated_at=utcnow())
    )


async def webhook_attempted_unscoped(
    session: AsyncSession, job_id: uuid.UUID, *, error: str | None, status: str
) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            webhook_status=status,
            webhook_attempts=Job.webhook_attempts + 1,
            webhook_error=error[:200] if error else None,
        )
    )


async def get_unscoped(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id, populate_existing=True)


async def stale_unscoped(
    session: AsyncSession, *, queued_before: datetime, running_before: datetime, limit: int
) -> list[uuid.UUID]:
    """Jobs the queue may have lost: queued, or running without news, for longer than a
    healthy queue would leave them."""
    statement = (
        select(Job.id)
        .where(
            ((Job.status == QUEUED) & (Job.updated_at < queued_before))
            | ((Job.status == RUNNING) & (Job.updated_at < running_before))
        )
        .order_by(Job.updated_at)
        .limit(limit)
    )
    return list((await session.execute(statement)).scalars())
