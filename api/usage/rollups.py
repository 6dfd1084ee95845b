"""Hourly, daily and monthly rollups of the request log: kept as events are inserted, read
by queries.

Writing: `insert_events` is the one way usage events reach the database. In one transaction it
inserts them (ignoring ids already present) and adds the ones actually inserted to their
hourly, daily and monthly rows per key and model (`usage_rollups`), per key
(`usage_key_rollups`) and per tenant and model (`usage_tenant_rollups`), so the rollups always
sum exactly the log. On PostgreSQL that is one statement that sums in the database; on SQLite,
the rows are summed here.

Reading: `pieces(start, end)` covers a time range with signed pieces: whole months, days and
hours from the rollups, the ragged edges from the log, and where it costs less, a whole unit
minus its outside part. `summed(...)` selects the same sums from each piece, negated where the
sign says so, and adds them up. This month's report over millions of events then reads one
row per key; a tenant's report by model or day, one row per model.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Subquery,
    TextClause,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import insert_ignoring_conflicts
from api.trace.repository import insert_traces
from api.usage.models import UsageEvent, UsageKeyRollup, UsageRollup, UsageTenantRollup

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# The event columns a rollup row adds up: tokens, the per-unit quantities (SPEC §5.12), cost,
# and what the response cache saved (a hit is 1 in `cache_hits`).
_ADDED = (
    "input_tokens", "cached_input_tokens", "output_tokens", "audio_seconds", "characters",
    "images", "cost_micros", "cache_hits", "saved_tokens", "saved_micros",
)  # fmt: skip
# Every sum of a rollup row: the events counted (all, failed, reached the model), then _ADDED.
SUMS = ("requests", "failed", "reached", *_ADDED)


# Writing


async def insert_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert usage events idempotently (an id already present is skipped) and add those
    inserted to their rollups; returns how many were inserted. Call inside a transaction.
    An event's trace (`steps`, `trace_id`, `trace_attempts`) goes to `request_traces` in the
    same transaction, only when the event itself was inserted: once."""
    if not rows:
        return 0
    if _dialect(session) == "postgresql":
        return await _record(session, rows)
    traced = {row["id"]: row for row in rows if row.get("steps")}
    if any(name in row for row in rows for name in _TRACE_FIELDS):
        rows = [{k: v for k, v in row.items() if k not in _TRACE_FIELDS} for row in rows]
    statement = insert_ignoring_conflicts(session, UsageEvent).returning(UsageEvent.id)
    inserted = set((await session.execute(statement, list(rows))).scalars())
    # An id twice in one batch is inserted once (the first row): count it once.
    added: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        if row["id"] in inserted:
            added.setdefault(row["id"], row)
    if added:
        events = list(added.values())
        # The tables in one order, each's rows sorted: writers lock rows in one order.
        for table, (owner, by_model) in _ROLLUPS.items():
            await _add(session, table, _rollup_rows(events, owner, by_model))
    await insert_traces(
        session, [_trace_row(row) for event_id, row in traced.items() if event_id in added]
    )
    return len(added)


# What an event row carries for `request_traces` (not columns of `usage_events`).
_TRACE_FIELDS = ("trace_id", "steps", "trace_attempts")


def _trace_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "key_id": row["key_id"],
        "trace_id": row.get("trace_id") or row["request_id"], "request_id": row["request_id"],
        "created_at": row["created_at"], "steps": row["steps"],
        "attempts": row.get("trace_attempts"),
    }  # fmt: skip


_COLUMNS = list(UsageEvent.__table__.columns)
# Each rollup table, and what its rows sum over: (owner column, by model).
_ROLLUPS: dict[Any, tuple[str, bool]] = {
    UsageRollup.__table__: ("key_id", True),
    UsageKeyRollup.__table__: ("key_id", False),
    UsageTenantRollup.__table__: ("tenant_id", True),
}


# PostgreSQL: one statement does it all


async def _record(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """The batch goes as one JSON array (orjson writes it in C); PostgreSQL inserts it, skips
    the ids it already has and sums what it inserted into the rollups itself. Building rollup
    rows in Python and sending every column as an array (which psycopg dumps element by
    element in Python) cost the worker over 200 µs of CPU per event."""
    batch = orjson.dumps([_complete(row) for row in rows]).decode()
    return int((await session.execute(_recorded(), {"events": batch})).scalar_one())


_DEFAULTS = {
    c.name: c.default.arg for c in _COLUMNS if c.default is not None and not callable(c.default.arg)
}
_MADE = {
    c.name: c.default.arg for c in _COLUMNS if c.default is not None and callable(c.default.arg)
}


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    """The row with the columns' defaults filled in (JSON has no notion of them)."""
    full = {**_DEFAULTS, **row}
    for name, make in _MADE.items():
        if name not in full:
            full[name] = make({})
    created_at = full["created_at"]
    if created_at.tzinfo is None:  # as `UTCDateTime` refuses one
        raise ValueError("naive datetimes are not stored; use api.kit.time.utcnow()")
    return full


def _pg_type(column: Any) -> str:
    return str(column.type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


# What a rollup row adds up over its events, from the `spans` rows of the statement below.
_SUMMED = {
    "requests": "count(*)",
    "failed": "count(*) FILTER (WHERE status >= 400)",
    "reached": "count(*) FILTER (WHERE status < 400 "
    "OR coalesce(input_tokens, 0) + coalesce(output_tokens, 0) > 0)",
    **{name: f"CAST(coalesce(sum({name}), 0) AS bigint)" for name in _ADDED},
}


def _summed_into(table: Any, owner: str, by_model: bool) -> str:
    """An INSERT adding `spans` to `table`, its rows in key order: every writer runs this same
    statement, so each locks the rows it updates in one order and none waits on another in a
    cycle."""
    keys = [owner, "span", "bucket", *(["model"] if by_model else [])]
    grouped = ", ".join([*keys, *(["tenant_id"] if owner != "tenant_id" else [])])
    columns = grouped + ", " + ", ".join(SUMS)
    added = ", ".join(f"{n} = {table.name}.{n} + EXCLUDED.{n}" for n in SUMS)
    return (
        f"INSERT INTO {table.name} ({columns}) "
        f"SELECT {grouped}, {', '.join(_SUMMED[n] for n in SUMS)} FROM spans "
        f"GROUP BY {grouped} ORDER BY {', '.join(keys)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"
    )


@functools.cache
def _recorded() -> TextClause:
    """PostgreSQL: insert a batch of events given as JSON, add the ones inserted to the three
    rollup tables, and count them, in one statement of fixed text. (Built on first use:
    foreign-key columns take their type from the referenced table once mapped.)"""
    names = ", ".join(c.name for c in _COLUMNS)
    record = ", ".join(f"{c.name} {_pg_type(c)}" for c in _COLUMNS)
    summed = ",\n".join(
        f"added_{n} AS ({_summed_into(table, owner, by_model)})"
        for n, (table, (owner, by_model)) in enumerate(_ROLLUPS.items())
    )
    return text(
        f"WITH new AS (INSERT INTO usage_events ({names}) "
        f"SELECT {names} FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS e({record}) "
        "ON CONFLICT DO NOTHING "
        "RETURNING id, key_id, tenant_id, model, status, created_at, " + ", ".join(_ADDED) + "),\n"
        # The traces of the events inserted (`request_traces`): a replayed event adds none.
        "traced AS (INSERT INTO request_traces "
        "(id, tenant_id, key_id, trace_id, request_id, created_at, steps, attempts) "
        "SELECT t.id, t.tenant_id, t.key_id, coalesce(t.trace_id, t.request_id), t.request_id, "
        "t.created_at, t.steps, t.trace_attempts "
        "FROM jsonb_to_recordset(CAST(:events AS jsonb)) AS t(id uuid, tenant_id uuid, "
        "key_id uuid, trace_id varchar(128), request_id varchar(128), "
        f"created_at {_pg_type(UsageEvent.__table__.c.created_at)}, steps text, "
        "trace_attempts text) "
        "WHERE t.steps IS NOT NULL AND t.id IN (SELECT id FROM new) ON CONFLICT DO NOTHING),\n"
        "spans AS (SELECT new.*, unit.span, date_trunc(unit.name, new.created_at, 'UTC') "
        "AS bucket FROM new CROSS JOIN (VALUES ('h', 'hour'), ('d', 'day'), ('m', 'month')) "
        f"AS unit (span, name)),\n{summed}\n"
        "SELECT count(*) FROM new"
    )


# SQLite (the embedded default): rollup rows summed here, one upsert per table


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _rollup_rows(
    events: list[dict[str, Any]], owner: str, by_model: bool = True
) -> list[dict[str, Any]]:
    """The events summed per `owner` ("key_id" or "tenant_id"), span, bucket (and model)."""
    sums: dict[tuple[uuid.UUID, str, datetime, str], dict[str, Any]] = {}
    for event in events:
        at: datetime = event["created_at"].astimezone(UTC)
        hour = at.replace(minute=0, second=0, microsecond=0)
        status = event["status"]
        tokens = (event.get("input_tokens") or 0) + (event.get("output_tokens") or 0)
        day = hour.replace(hour=0)
        for span, bucket in (("h", hour), ("d", day), ("m", day.replace(day=1))):
            key = (event[owner], span, bucket, event["model"] if by_model else "")
            row = sums.get(key)
            if row is None:
                row = sums[key] = {
                    owner: key[0], "span": span, "bucket": bucket,
                    "tenant_id": event["tenant_id"], **dict.fromkeys(SUMS, 0),
                }  # fmt: skip
                if by_model:
                    row["model"] = key[3]
            row["requests"] += 1
            row["failed"] += status >= 400
            row["reached"] += status < 400 or tokens > 0
            for name in _ADDED:
                row[name] += event.get(name) or 0
    # One order for every writer: concurrent upserts then lock rows in the same order.
    return [sums[key] for key in sorted(sums)]


async def _add(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    statement = sqlite.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[column.name for column in table.primary_key],
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
    hours from the rollups, at most a few ragged edges from the log. Where a unit is read whole
    and its outside part subtracted (at the next finer span) costs less than covering its inside
    part, it is: an edge then never costs more than half a unit of the finer rows. Nothing is
    recorded after `now`, so the part of a unit after it costs nothing: a range ending a moment
    ago reads today's row minus the last moments, not every hour of today; a range reaching past
    `now` is open-ended. `coarsest`: "d" when grouping by day."""
    now = now or datetime.now(UTC)
    start = start or _EPOCH
    if end is not None and end > now:
        end = None
    if end is not None and start >= end:
        return [Piece("log", start, end)]  # empty: selects nothing
    return _Cover(now).cover(start, end, SPANS[SPANS.index(coarsest) :], 1)


@dataclass(frozen=True, slots=True)
class _Cover:
    now: datetime

    def _cost(self, a: datetime, b: datetime) -> timedelta:
        """How much recorded time [a, b) spans: the finer rows it takes to cover it."""
        return max(min(b, self.now) - a, timedelta(0))

    def cover(
        self, a: datetime, b: datetime | None, spans: tuple[str, ...], sign: int
    ) -> list[Piece]:
        if b is not None and a >= b:
            return []
        if not spans:
            return [Piece("log", a, b, sign)]
        span, finer = spans[0], spans[1:]
        first = _ceil(a, span)
        if b is None:
            return [*self._left(a, first, span, finer, sign), Piece(span, first, None, sign)]
        last = _floor(b, span)
        if first <= last:
            whole = [Piece(span, first, last, sign)] if first < last else []
            return [
                *self._left(a, first, span, finer, sign),
                *whole,
                *self._right(last, b, span, finer, sign),
            ]
        # Inside one unit [last, first): read it whole if its outside part costs less.
        if self._cost(last, a) + self._cost(b, first) < self._cost(a, b):
            outside = [*self.cover(last, a, finer, -sign), *self.cover(b, first, finer, -sign)]
            return [Piece(span, last, first, sign), *outside]
        return self.cover(a, b, finer, sign)

    def _left(
        self, a: datetime, first: datetime, span: str, finer: tuple[str, ...], sign: int
    ) -> list[Piece]:
        """[a, first): the end of the unit `a` falls in."""
        if a == first:
            return []
        floor = _floor(a, span)
        if self._cost(floor, a) < self._cost(a, first):
            return [Piece(span, floor, first, sign), *self.cover(floor, a, finer, -sign)]
        return self.cover(a, first, finer, sign)

    def _right(
        self, last: datetime, b: datetime, span: str, finer: tuple[str, ...], sign: int
    ) -> list[Piece]:
        """[last, b): the start of the unit `b` falls in."""
        if last == b:
            return []
        after = _next(last, span)
        if self._cost(b, after) < self._cost(last, b):
            return [Piece(span, last, after, sign), *self.cover(b, after, finer, -sign)]
        return self.cover(last, b, finer, sign)


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_REACHED_THE_MODEL = or_(
    UsageEvent.status < 400, UsageEvent.input_tokens + UsageEvent.output_tokens > 0
)


Day = Callable[[Any], ColumnElement[Any]]


def _signed(value: ColumnElement[Any], part: _Part) -> ColumnElement[Any]:
    return value if part.sign > 0 else -value


def _log_select(
    _: Any, dims: Sequence[str], day: Day, part: _Part, where: list[ColumnElement[bool]]
) -> Select[Any]:
    columns = [_dimension(UsageEvent, name, day).label(name) for name in dims]
    values = [
        func.count(UsageEvent.id),
        func.sum(case((UsageEvent.status >= 400, 1), else_=0)),
        func.sum(case((_REACHED_THE_MODEL, 1), else_=0)),
        *(func.sum(getattr(UsageEvent, name)) for name in _ADDED),
    ]
    # BIGINT like the rollups' columns: summing NUMERIC over every piece's rows cost more
    # than reading them.
    sums = [
        _signed(cast(value, BigInteger), part).label(name)
        for value, name in zip(values, SUMS, strict=True)
    ]
    statement = select(*columns, *sums).where(
        *where, UsageEvent.created_at >= bindparam(f"start_{part.index}")
    )
    if not part.open_ended:
        statement = statement.where(UsageEvent.created_at < bindparam(f"end_{part.index}"))
    return statement.group_by(*columns) if columns else statement


def _rollup_select(
    table: Any, dims: Sequence[str], day: Day, part: _Part, where: list[ColumnElement[bool]]
) -> Select[Any]:
    # The rows themselves, not their sums: the one aggregation over every piece's rows is
    # cheaper than one per piece and another over those.
    columns = [_dimension(table, name, day).label(name) for name in dims]
    values = [_signed(getattr(table, name), part).label(name) for name in SUMS]
    statement = select(*columns, *values).where(
        *where, table.span == part.source, table.bucket >= bindparam(f"start_{part.index}")
    )
    if not part.open_ended:
        statement = statement.where(table.bucket < bindparam(f"end_{part.index}"))
    return statement


def _dimension(model: Any, name: str, day: Day) -> ColumnElement[Any]:
    if name == "day":  # "YYYY-MM-DD", UTC
        return day(model.created_at if model is UsageEvent else model.bucket)
    column: ColumnElement[Any] = getattr(model, name)
    return column


Then = Callable[[Subquery], Select[Any]]


def summed(
    session: AsyncSession,
    start: datetime | None,
    end: datetime | None,
    *,
    tenant_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    model: str | None = None,
    by: Sequence[str] = (),
    then: Then | None = None,
) -> tuple[Select[Any], dict[str, Any]]:
    """A statement and its parameters selecting one row per value of the `by` columns
    ("key_id", "model", "day") with every sum in SUMS over [start, end), from the rollups and
    the log's edges. Sums over all of a tenant's keys read the tenant's rollups; sums over all
    models, the keys' rollups without the model. `then`
    (a function of the sums as a subquery, defined once) selects from them instead.

    Statements are built once per shape (which filters, groups and pieces) and reused with new
    parameters: building a union of a dozen selects cost more CPU than the query itself."""
    cover = pieces(start, end, coarsest="d" if "day" in by else "m")
    shape = _Shape(
        dialect=_dialect(session),
        tenant_wide=tenant_id is not None and key_id is None and "key_id" not in by,
        filters=(tenant_id is not None, key_id is not None, model is not None),
        by=tuple(by),
        parts=tuple(
            _Part(i, piece.source, piece.sign, piece.end is None) for i, piece in enumerate(cover)
        ),
        then=then,
    )
    params: dict[str, Any] = {
        name: value
        for name, value in (("tenant_id", tenant_id), ("key_id", key_id), ("model", model))
        if value is not None
    }
    for i, piece in enumerate(cover):
        params[f"start_{i}"] = piece.start
        if piece.end is not None:
            params[f"end_{i}"] = piece.end
    return _statement(shape), params


@dataclass(frozen=True, slots=True)
class _Part:
    index: int
    source: str
    sign: int
    open_ended: bool


@dataclass(frozen=True, slots=True)
class _Shape:
    dialect: str
    tenant_wide: bool
    filters: tuple[bool, bool, bool]  # by tenant, key, model
    by: tuple[str, ...]
    parts: tuple[_Part, ...]
    then: Then | None


@functools.lru_cache(maxsize=1024)
def _statement(shape: _Shape) -> Select[Any]:
    day = _day_function(shape.dialect)
    table: Any = UsageRollup
    if shape.tenant_wide:
        table = UsageTenantRollup
    elif not shape.filters[2] and "model" not in shape.by:
        table = UsageKeyRollup
    by_tenant, by_key, by_model = shape.filters
    selects: list[Select[Any]] = []
    for part in shape.parts:
        source: Any = UsageEvent if part.source == "log" else table
        where = []
        if by_tenant:
            where.append(source.tenant_id == bindparam("tenant_id"))
        if by_key:
            where.append(source.key_id == bindparam("key_id"))
        if by_model:
            where.append(source.model == bindparam("model"))
        builder = _log_select if part.source == "log" else _rollup_select
        selects.append(builder(source, shape.by, day, part, where))
    combined = union_all(*selects).subquery() if len(selects) > 1 else selects[0].subquery()
    keys = [combined.c[name] for name in shape.by]
    # As BIGINT: PostgreSQL sums BIGINT into NUMERIC, which the driver turns into Decimals.
    totals = [
        cast(func.coalesce(func.sum(combined.c[name]), 0), BigInteger).label(name) for name in SUMS
    ]
    labels = [
        func.to_char(key, "YYYY-MM-DD").label("day")  # formatted once per day, not per row
        if key.name == "day" and shape.dialect == "postgresql"
        else key
        for key in keys
    ]
    statement = select(*labels, *totals)
    if keys:
        statement = statement.group_by(*keys)
    return statement if shape.then is None else shape.then(statement.subquery())


def _day_function(dialect: str) -> Day:
    if dialect == "postgresql":
        return lambda at: func.date_trunc("day", func.timezone("UTC", at))
    return lambda at: func.strftime("%Y-%m-%d", at)
