"""Hourly and daily rollups of the request log: kept as events are inserted, read by queries.

Writing: `insert_events` is the one way usage events reach the database. In one transaction it
inserts them (ignoring ids already present) and adds the ones actually inserted to their
hourly and daily `usage_rollups` rows, so the rollups always sum exactly the log.

Reading: `pieces(start, end)` cuts a time range into the log's ragged edges (before the first
whole hour, after the last), whole hours up to the first and from the last whole day, and
whole days between; `summed(...)` selects the same sums from each piece and adds them up. A
month's report over millions of events then reads a few thousand rollup rows and at most two
hours of the log.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import insert_ignoring_conflicts
from api.usage.models import UsageEvent, UsageRollup

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SUMS = (
    "requests", "failed", "reached", "input_tokens", "cached_input_tokens", "output_tokens",
    "cost_micros",
)  # fmt: skip
_ADDED = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_micros")


# Writing


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert usage events idempotently (an id already present is skipped) and add those
    inserted to their rollups; returns how many were inserted. Call inside a transaction."""
    if not rows:
        return 0
    statement = insert_ignoring_conflicts(session, UsageEvent).returning(UsageEvent.id)
    inserted = set((await session.execute(statement, list(rows))).scalars())
    # An id twice in one batch is inserted once (the first row): count it once.
    added: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        if row["id"] in inserted:
            added.setdefault(row["id"], row)
    if added:
        await _add(session, _rollup_rows(list(added.values())))
    return len(added)


def _rollup_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sums: dict[tuple[uuid.UUID, str, datetime, str], dict[str, Any]] = {}
    for event in events:
        at: datetime = event["created_at"].astimezone(UTC)
        hour = at.replace(minute=0, second=0, microsecond=0)
        status = event["status"]
        tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
        for span, bucket in (("h", hour), ("d", hour.replace(hour=0))):
            key = (event["key_id"], span, bucket, event["model"])
            row = sums.get(key)
            if row is None:
                row = sums[key] = {
                    "key_id": key[0], "span": span, "bucket": bucket, "model": key[3],
                    "tenant_id": event["tenant_id"], **dict.fromkeys(SUMS, 0),
                }  # fmt: skip
            row["requests"] += 1
            row["failed"] += status >= 400
            row["reached"] += status < 400 or tokens > 0
            for name in _ADDED:
                row[name] += event.get(name) or 0
    # One order for every writer: concurrent upserts then lock rows in the same order.
    return [sums[key] for key in sorted(sums, key=lambda k: (k[0], k[1], k[2], k[3]))]


async def _add(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(UsageRollup)
    table = UsageRollup.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["key_id", "span", "bucket", "model"],
        set_={name: table.c[name] + statement.excluded[name] for name in SUMS},
    )
    await session.execute(statement, rows)


# Reading


@dataclass(frozen=True, slots=True)
class Piece:
    source: str  # "log", "h" (hourly rollups) or "d" (daily rollups)
    start: datetime
    end: datetime | None  # None: open-ended


def _ceil(at: datetime, step: timedelta) -> datetime:
    floor = _floor(at, step)
    return floor if floor == at else floor + step


def _floor(at: datetime, step: timedelta) -> datetime:
    at = at.astimezone(UTC)
    if step == DAY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(minute=0, second=0, microsecond=0)


def pieces(start: datetime | None, end: datetime | None) -> list[Piece]:
    """[start, end) as log edges, whole hours and whole days (None: unbounded). Open-ended
    ranges read the current day from its daily row, which is as current as the log."""
    start = start or _EPOCH
    first_hour = _ceil(start, HOUR)
    last_hour = _floor(end, HOUR) if end is not None else None
    if end is not None and last_hour is not None and first_hour >= last_hour:
        return [Piece("log", start, end)]
    out = [Piece("log", start, first_hour)] if start < first_hour else []
    first_day = _ceil(first_hour, DAY)
    if first_hour < first_day and (last_hour is None or first_day <= last_hour):
        out.append(Piece("h", first_hour, first_day))
    if end is None or last_hour is None:
        out.append(Piece("d", first_day, None))
        return out
    last_day = _floor(last_hour, DAY)
    if first_day > last_hour:  # within one day: whole hours only
        out.append(Piece("h", first_hour, last_hour))
    else:
        if first_day < last_day:
            out.append(Piece("d", first_day, last_day))
        if last_day < last_hour:
            out.append(Piece("h", max(last_day, first_hour), last_hour))
    if last_hour < end:
        out.append(Piece("log", last_hour, end))
    return out


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_REACHED_THE_MODEL = or_(
    UsageEvent.status < 400, UsageEvent.input_tokens + UsageEvent.output_tokens > 0
)


Day = Callable[[Any], ColumnElement[Any]]


def _log_select(
    dims: Sequence[str], day: Day, piece: Piece, where: list[ColumnElement[bool]]
) -> Select[Any]:
    columns = [_dimension(UsageEvent, name, day).label(name) for name in dims]
    sums = [
        func.count(UsageEvent.id).label("requests"),
        func.sum(case((UsageEvent.status >= 400, 1), else_=0)).label("failed"),
        func.sum(case((_REACHED_THE_MODEL, 1), else_=0)).label("reached"),
        *(func.sum(getattr(UsageEvent, name)).label(name) for name in _ADDED),
    ]
    statement = select(*columns, *sums).where(*where, UsageEvent.created_at >= piece.start)
    if piece.end is not None:
        statement = statement.where(UsageEvent.created_at < piece.end)
    return statement.group_by(*columns) if columns else statement


def _rollup_select(
    dims: Sequence[str], day: Day, piece: Piece, where: list[ColumnElement[bool]]
) -> Select[Any]:
    columns = [_dimension(UsageRollup, name, day).label(name) for name in dims]
    sums = [func.sum(getattr(UsageRollup, name)).label(name) for name in SUMS]
    statement = select(*columns, *sums).where(
        *where, UsageRollup.span == piece.source, UsageRollup.bucket >= piece.start
    )
    if piece.end is not None:
        statement = statement.where(UsageRollup.bucket < piece.end)
    return statement.group_by(*columns) if columns else statement


def _dimension(model: Any, name: str, day: Day) -> ColumnElement[Any]:
    if name == "day":  # "YYYY-MM-DD", UTC
        return day(model.created_at if model is UsageEvent else model.bucket)
    column: ColumnElement[Any] = getattr(model, name)
    return column


def summed(
    dialect: str,
    start: datetime | None,
    end: datetime | None,
    *,
    tenant_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    model: str | None = None,
    by: Sequence[str] = (),
) -> Select[Any]:
    """One row per value of the `by` columns ("key_id", "model", "day"), with every sum in
    SUMS over [start, end), from the rollups and the log's edges."""
    day = _day_function(dialect)
    parts: list[Select[Any]] = []
    for piece in pieces(start, end):
        source: Any = UsageEvent if piece.source == "log" else UsageRollup
        where = []
        if tenant_id is not None:
            where.append(source.tenant_id == tenant_id)
        if key_id is not None:
            where.append(source.key_id == key_id)
        if model is not None:
            where.append(source.model == model)
        builder = _log_select if piece.source == "log" else _rollup_select
        parts.append(builder(by, day, piece, where))
    combined = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    keys = [combined.c[name] for name in by]
    totals = [func.coalesce(func.sum(combined.c[name]), 0).label(name) for name in SUMS]
    statement = select(*keys, *totals)
    return statement.group_by(*keys) if keys else statement


def _day_function(dialect: str) -> Day:
    if dialect == "postgresql":
        return lambda at: func.to_char(func.timezone("UTC", at), "YYYY-MM-DD")
    return lambda at: func.strftime("%Y-%m-%d", at)
