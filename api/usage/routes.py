"""Usage reports, the CSV export and the request log (SPEC §5.3).

A master key sees its whole tenant; a standard key only itself (another key's id is a 404).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.auth.service import Principal as AuthPrincipal
from api.deps import DbSession, Principal
from api.errors import InvalidRequest, NotFound
from api.gateway.relay import JSONBody
from api.kit.ids import parse_id
from api.kit.money import micros_to_usd
from api.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, list_body
from api.kit.time import isoformat, month_start, utcnow
from api.trace.repository import TraceRepository
from api.usage.models import UsageEvent
from api.usage.repository import EXPORT_COLUMNS, SUM_COLUMNS, UsageFilter, UsageRepository

router = APIRouter(tags=["usage"])

# What spreadsheets read as the start of a formula (OWASP, "CSV Injection").
_FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def usage_filter(
    principal: AuthPrincipal,
    start: datetime | None,
    end: datetime | None,
    key_id: str | None,
    model: str | None,
) -> UsageFilter:
    now = utcnow()
    start = _utc(start, "start") or month_start(now)
    end = _utc(end, "end") or now + timedelta(seconds=1)
    if end <= start:
        raise InvalidRequest("end must be after start.", param="end")
    wanted = parse_id(key_id, "key") if key_id else None
    if not principal.is_master:
        if wanted is not None and wanted != principal.key_id:
            raise NotFound(f"No key with id {key_id}.", param="key_id")
        wanted = principal.key_id
    return UsageFilter(start=start, end=end, key_id=wanted, model=model)


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest(f"{name}: needs a timezone, e.g. 2026-01-01T00:00:00Z.", param=name)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{name}: out of range.", param=name) from None


def _csv_cell(value: object) -> object:
    """Text a client chose (key names, model names) that would start a formula gets a leading
    quote, so a spreadsheet shows it instead of running it; numbers stay numbers."""
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, str) and value.startswith(_FORMULA_LEADS):
        return "'" + value
    return value


def _with_usd(row: dict[str, Any]) -> dict[str, Any]:
    row["cost_usd"] = micros_to_usd(row["cost_micros"])
    return row


@router.get("/v1/usage")
async def get_usage(
    session: DbSession,
    principal: Principal,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: str | None = None,
    model: str | None = Query(None, max_length=200),
    group_by: Literal["key", "model", "day"] = "key",
) -> Response:
    where = usage_filter(principal, start, end, key_id, model)
    repository = UsageRepository(session, principal.tenant_id)
    by_key = await repository.grouped(where, "key")
    # Totals are summed from the same rows, so they always agree with `by_key`.
    totals = {name: sum(row[name] for row in by_key) for name in SUM_COLUMNS}
    body: dict[str, Any] = {
        "object": "usage",
        "start": isoformat(where.start),
        "end": isoformat(where.end),
        "group_by": group_by,
        "by_key": [_with_usd(row) for row in by_key],
    }
    if group_by != "key":
        body[f"by_{group_by}"] = [
            _with_usd(row) for row in await repository.grouped(where, group_by)
        ]
    body["totals"] = _with_usd(totals)
    # orjson writes the key ids: a report of thousands of keys is not worth a validation pass.
    return JSONBody(orjson.dumps(body))


@router.get("/v1/cache/stats")
async def cache_stats(
    session: DbSession,
    principal: Principal,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: str | None = None,
) -> Response:
    """What the response cache saved over a period (this month by default): hits, and the
    tokens and cost they did not send upstream, in all and per key."""
    where = usage_filter(principal, start, end, key_id, None)
    by_key = await UsageRepository(session, principal.tenant_id).grouped(where, "key")
    rows = [
        {
            "key_id": row["key_id"],
            "key_name": row["key_name"],
            "requests": row["requests"],
            "hits": row["cache_hits"],
            "saved_tokens": row["saved_tokens"],
            "saved_micros": row["saved_micros"],
            "saved_usd": micros_to_usd(row["saved_micros"]),
        }
        for row in by_key
        if row["cache_hits"]
    ]
    saved = sum(row["saved_micros"] for row in rows)
    body = {
        "object": "cache_stats",
        "start": isoformat(where.start),
        "end": isoformat(where.end),
        "requests": sum(row["requests"] for row in by_key),
        "hits": sum(row["hits"] for row in rows),
        "saved_tokens": sum(row["saved_tokens"] for row in rows),
        "saved_micros": saved,
        "saved_usd": micros_to_usd(saved),
        "by_key": rows,
    }
    return JSONBody(orjson.dumps(body))


@router.get("/v1/usage/export")
async def export_usage(
    request: Request,
    principal: Principal,
    format: Literal["csv"] = "csv",
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: str | None = None,
    model: str | None = Query(None, max_length=200),
) -> StreamingResponse:
    where = usage_filter(principal, start, end, key_id, model)
    sessionmaker = request.state.sessionmaker
    tenant_id = principal.tenant_id

    async def rows() -> AsyncIterator[str]:
        # Its own session: the request's closes when this handler returns, before streaming.
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        async with sessionmaker() as export_session:
            count = 0
            async for row in UsageRepository(export_session, tenant_id).stream_export(where):
                writer.writerow(_csv_cell(value) for value in row)
                count += 1
                if count % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    filename = f"tollgate-usage-{where.start:%Y%m%d}-{where.end:%Y%m%d}.{format}"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def log_entry(event: UsageEvent, trace_id: str | None) -> dict[str, Any]:
    """One request-log entry as `GET /v1/logs` shows it; `trace_id` while its trace is kept."""
    return {
        "object": "log",
        "id": str(event.id),
        "request_id": event.request_id,
        "key_id": str(event.key_id),
        "endpoint": event.endpoint,
        "model": event.model,
        "provider": event.provider,
        "status": event.status,
        "input_tokens": event.input_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "output_tokens": event.output_tokens,
        "reasoning_tokens": event.reasoning_tokens,
        "audio_seconds": event.audio_seconds,
        "characters": event.characters,
        "images": event.images,
        "cache": event.cache,
        "cache_hits": event.cache_hits,
        "saved_tokens": event.saved_tokens,
        "saved_micros": event.saved_micros,
        "cost_micros": event.cost_micros,
        "cost_usd": micros_to_usd(event.cost_micros),
        "latency_ms": event.latency_ms,
        "tool_calls": event.tool_calls,
        "estimated": event.estimated,
        "error_code": event.error_code,
        "attempts": event.attempts,
        "account": event.account,
        "failover_from": event.failover_from,
        "trace": orjson.loads(event.trace) if event.trace else None,
        "trace_id": trace_id,
        "created_at": isoformat(event.created_at),
    }


@router.get("/v1/logs")
async def list_logs(
    session: DbSession,
    principal: Principal,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=512),
    key_id: str | None = None,
    model: str | None = Query(None, max_length=200),
) -> dict[str, Any]:
    where = usage_filter(principal, datetime(1970, 1, 1, tzinfo=UTC), None, key_id, model)
    repository = UsageRepository(session, principal.tenant_id)
    statement = repository.base()
    if where.key_id is not None:
        statement = statement.where(repository.model.key_id == where.key_id)
    if where.model is not None:
        statement = statement.where(repository.model.model == where.model)
    page = await repository.paginate(statement, limit=limit, cursor=cursor)
    # Each entry links to its trace (`GET /v1/traces/{trace_id}`) while the trace is kept.
    trace_ids = await TraceRepository(session, principal.tenant_id).trace_ids(
        [event.id for event in page.items]
    )
    data = [log_entry(event, trace_ids.get(event.id)) for event in page.items]
    return list_body(data, page)
