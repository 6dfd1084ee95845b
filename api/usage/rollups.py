"""Hourly, daily and monthly rollups of the request log: kept as events are inserted, read
by queries.

Writing: `insert_events` is the one way usage events reach the database. In one transaction it
inserts them (ignoring ids already present) and adds the ones actually inserted to their
hourly, daily and monthly `usage_rollups` rows, so the rollups always sum exactly the log.

Reading: `pieces(start, end)` covers a time range with signed pieces: whole months, days and
hours from the rollups, the ragged edges from the log, and where a unit is mostly inside the
range, the whole unit minus its outside part. `summed(...)` selects the same sums from each
piece, negated where the sign says so, and adds them up. This month's report over millions of
events then reads one row per key and model.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, TextClause, case, func, or_, select, text, union_all
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


def _pg_array(column: Any) -> str:
    """The PostgreSQL array type of a column of the log, for `unnest`."""
    kind = column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return f"{kind}[]"


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert usage events idempotently (an id already present is skipped) and add those
    inserted to their rollups; returns how many were inserted. Call inside a transaction."""
    if not rows:
        return 0
    if _dialect(session) == "postgresql":
        inserted = await _insert_unnested(session, rows)
    else:
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


_COLUMNS = list(UsageEvent.__table__.columns)


@functools.cache
def _unnested() -> TextClause:
    """PostgreSQL: the batch as one array per column, in one statement of fixed text. An
    executemany with RETURNING is rendered as a new multi-row VALUES statement per batch,
    which cost the worker more CPU than everything else it does per event. (Built on first
    use: foreign-key columns take their type from the referenced table once mapped.)"""
    arrays = ", ".join(f"CAST(:{c.name} AS {_pg_array(c)})" for c in _COLUMNS)
    return text(
        f"INSERT INTO usage_events ({', '.join(c.name for c in _COLUMNS)}) "
        f"SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING RETURNING id"
    )


async def _insert_unnested(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[Any]:
    arrays = {column.name: [_value(row, column) for row in rows] for column in _COLUMNS}
    return set((await session.execute(_unnested(), arrays)).scalars())


def _value(row: dict[str, Any], column: Any) -> Any:
    if column.name in row:
        return row[column.name]
    default = column.default
    if default is None:
        return None
    return default.arg({}) if callable(default.arg) else default.arg


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _rollup_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sums: dict[tuple[uuid.UUID, str, datetime, str], dict[str, Any]] = {}
    for event in events:
        at: datetime = event["created_at"].astimezone(UTC)
        hour = at.replace(minute=0, second=0, microsecond=0)
        status = event["status"]
        tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
        day = hour.replace(hour=0)
        for span, bucket in (("h", hour), ("d", day), ("m", day.replace(day=1))):
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
    insert = postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert
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
    source: str  # "log", or the rollups of a span: "h" (hours), "d" (days), "m" (months)
    start: datetime
    end: datetime | None  # None: open-ended
    sign: int = 1  # -1: a part of a larger piece that lies outside the range, taken back out


SPANS = ("m", "d", "h")  # coarsest first


def _floor(at: datetime, span: str) -> datetime:
    at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if span == "h":
        return at
    return at.replace(hour=0) if span == "d" else at.replace(day=1, hour=0)


def _next(floor: datetime, span: str) -> datetime:
    if span == "h":
        return floor + HOUR
    if span == "d":
        return floor + DAY
    return (floor + timedelta(days=32)).replace(day=1)


def _ceil(at: datetime, span: str) -> datetime:
    floor = _floor(at, span)
    return floor if floor == at else _next(floor, span)


def pieces(
    start: datetime | None,
    end: datetime | None,
    *,
    coarsest: str = "m",
    now: datetime | None = None,
) -> list[Piece]:
    """[start, end) as signed pieces whose sums add up to the range's: whole months, days and
    hours from the rollups, at most a few ragged edges from the log. A unit mostly inside the
    range is read whole and its outside part subtracted (at the next finer span), so an edge
    never costs more than half a unit of the finer rows. Nothing is recorded after `now`: a
    range reaching past it is open-ended. `coarsest`: "d" when grouping by day."""
    start = start or _EPOCH
    if end is not None and end > (now or datetime.now(UTC)):
        end = None
    if end is not None and start >= end:
        return [Piece("log", start, end)]  # empty: selects nothing
    return _cover(start, end, SPANS[SPANS.index(coarsest) :], 1)


def _cover(a: datetime, b: datetime | None, spans: tuple[str, ...], sign: int) -> list[Piece]:
    if b is not None and a >= b:
        return []
    if not spans:
        return [Piece("log", a, b, sign)]
    span, finer = spans[0], spans[1:]
    first = _ceil(a, span)
    if b is None:
        return [*_left(a, first, span, finer, sign), Piece(span, first, None, sign)]
    last = _floor(b, span)
    if first <= last:
        whole = [Piece(span, first, last, sign)] if first < last else []
        return [*_left(a, first, span, finer, sign), *whole, *_right(last, b, span, finer, sign)]
    # Inside one unit [last, first): read it whole if the range is most of it.
    if (b - a) * 2 > first - last:
        outside = [*_cover(last, a, finer, -sign), *_cover(b, first, finer, -sign)]
        return [Piece(span, last, first, sign), *outside]
    return _cover(a, b, finer, sign)


def _left(
    a: datetime, first: datetime, span: str, finer: tuple[str, ...], sign: int
) -> list[Piece]:
    """[a, first): the end of the unit `a` falls in."""
    if a == first:
        return []
    floor = _floor(a, span)
    if (first - a) * 2 > first - floor:
        return [Piece(span, floor, first, sign), *_cover(floor, a, finer, -sign)]
    return _cover(a, first, finer, sign)


def _right(
    last: datetime, b: datetime, span: str, finer: tuple[str, ...], sign: int
) -> list[Piece]:
    """[last, b): the start of the unit `b` falls in."""
    if last == b:
        return []
    after = _next(last, span)
    if (b - last) * 2 > after - last:
        return [Piece(span, last, after, sign), *_cover(b, after, finer, -sign)]
    return _cover(last, b, finer, sign)


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_REACHED_THE_MODEL = or_(
    UsageEvent.status < 400, UsageEvent.input_tokens + UsageEvent.output_tokens > 0
)


Day = Callable[[Any], ColumnElement[Any]]


def _signed(value: ColumnElement[Any], piece: Piece) -> ColumnElement[Any]:
    return value if piece.sign > 0 else -value


def _log_select(
    dims: Sequence[str], day: Day, piece: Piece, where: list[ColumnElement[bool]]
) -> Select[Any]:
    columns = [_dimension(UsageEvent, name, day).label(name) for name in dims]
    values = [
        func.count(UsageEvent.id),
        func.sum(case((UsageEvent.status >= 400, 1), else_=0)),
        func.sum(case((_REACHED_THE_MODEL, 1), else_=0)),
        *(func.sum(getattr(UsageEvent, name)) for name in _ADDED),
    ]
    sums = [_signed(value, piece).label(name) for value, name in zip(values, SUMS, strict=True)]
    statement = select(*columns, *sums).where(*where, UsageEvent.created_at >= piece.start)
    if piece.end is not None:
        statement = statement.where(UsageEvent.created_at < piece.end)
    return statement.group_by(*columns) if columns else statement


def _rollup_select(
    dims: Sequence[str], day: Day, piece: Piece, where: list[ColumnElement[bool]]
) -> Select[Any]:
    columns = [_dimension(UsageRollup, name, day).label(name) for name in dims]
    sums = [_signed(func.sum(getattr(UsageRollup, name)), piece).label(name) for name in SUMS]
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
    session: AsyncSession,
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
    dialect = _dialect(session)
    day = _day_function(dialect)
    parts: list[Select[Any]] = []
    for piece in pieces(start, end, coarsest="d" if "day" in by else "m"):
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
    labels = [
        func.to_char(key, "YYYY-MM-DD").label("day")  # formatted once per day, not per row
        if key.name == "day" and dialect == "postgresql"
        else key
        for key in keys
    ]
    statement = select(*labels, *totals)
    return statement.group_by(*keys) if keys else statement


def _day_function(dialect: str) -> Day:
    if dialect == "postgresql":
        return lambda at: func.date_trunc("day", func.timezone("UTC", at))
    return lambda at: func.strftime("%Y-%m-%d", at)
