"""Search over a tenant's thread messages (SPEC §5.6).

Isolation is enforced twice. The vector query is always filtered by the caller's tenant, and
for a standard key by its own key (a master key may name any key of its tenant); a `thread_id`
or `key_id` the caller cannot see is a 404, as everywhere. Then every hit is checked against
the database (the message exists, its thread is the tenant's, and the key's for a standard
key) before it is returned, with its text read from there: a vector left behind by a deleted
thread is never shown, and is removed in the background.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import service as auth_service
from api.auth.service import Principal
from api.db import session_scope
from api.errors import InvalidRequest, NotFound, SearchUnavailable
from api.search.repository import SearchRepository
from api.search.runtime import Search
from api.search.schemas import SearchCreate, SearchHitRead
from api.search.store import StoreUnavailable, VectorFilter, VectorHit
from api.search.text import message_text
from api.thread import service as thread_service
from api.thread.models import ThreadMessage

logger = logging.getLogger("tollgate.search")

# Hits asked beyond `limit`, so a few that fail the database check still leave `limit`.
OVERSAMPLE = 10


async def search(
    sessionmaker: async_sessionmaker[AsyncSession],
    principal: Principal,
    data: SearchCreate,
    runtime: Search,
) -> list[SearchHitRead]:
    nearest = runtime.nearest
    if nearest is None:
        raise NotFound("Search is turned off on this server (TOLLGATE_SEARCH_ENABLED).")
    async with session_scope(sessionmaker) as session:
        where = await _filter(session, principal, data)
    # No database session is held meanwhile: this may be a worker's round trip.
    try:
        hits = await nearest.nearest(data.query, where, data.limit + OVERSAMPLE, data.min_score)
    except StoreUnavailable as exc:
        raise SearchUnavailable("The vector store is unreachable; try again shortly.") from exc
    except Exception as exc:  # the model, or a worker that did not answer in time
        logger.warning("search: the query could not be run: %r", exc)
        raise SearchUnavailable("The query could not be run right now; try again.") from exc
    async with session_scope(sessionmaker) as session:
        rows = await SearchRepository(session, principal.tenant_id).visible(
            [hit.id for hit in hits], where.key_id
        )
    gone = [hit.id for hit in hits if hit.id not in rows]
    if gone:
        await runtime.forget(gone)
    found = [_render(hit, rows[hit.id]) for hit in hits if _shown(rows.get(hit.id), where)]
    return found[: data.limit]


async def _filter(session: AsyncSession, principal: Principal, data: SearchCreate) -> VectorFilter:
    start, end = _utc(data.start, "start"), _utc(data.end, "end")
    if start is not None and end is not None and start > end:
        raise InvalidRequest("start must not be after end.", param="start")
    key_id = data.key_id
    if key_id is not None:
        if principal.is_master:
            await auth_service.get_key(session, principal, key_id)  # another tenant's: 404
        elif key_id != principal.key_id:
            raise NotFound(f"No key with id {key_id}.", param="key_id")
    if data.thread_id is not None:  # a thread the caller cannot see: 404
        await thread_service.get_thread(session, principal, data.thread_id)
    return VectorFilter(
        tenant_id=principal.tenant_id,
        key_id=key_id if principal.is_master else principal.key_id,
        thread_id=data.thread_id,
        role=data.role,
        start=start.timestamp() if start is not None else None,
        end=end.timestamp() if end is not None else None,
    )


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name}: needs a timezone, e.g. 2026-01-01T00:00:00Z.", param=name)
    return value.astimezone(UTC)


def _shown(row: ThreadMessage | None, where: VectorFilter) -> bool:
    """The database's word on a hit: what the vector filter asked, checked on the row."""
    if row is None or not message_text(row.content):
        return False
    if where.thread_id is not None and row.thread_id != where.thread_id:
        return False
    if where.role is not None and row.role != where.role:
        return False
    created = row.created_at.timestamp()
    return (where.start is None or created >= where.start) and (
        where.end is None or created <= where.end
    )


def _render(hit: VectorHit, row: ThreadMessage) -> SearchHitRead:
    return SearchHitRead(
        message_id=str(row.id),
        thread_id=str(row.thread_id),
        role=row.role,
        text=message_text(row.content),
        score=hit.score,
        created_at=row.created_at,
    )
