"""Usage and the request log.

The usage page reads the rollups (three grouped queries, never a scan of the log) with the
filter rules of `/v1/usage`; its CSV is `/v1/usage/export`'s own answer. The log pages list
entries as `/v1/logs` writes them (`log_entry`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import service as key_service
from api.auth.repository import ApiKeyRepository
from api.dashboard.forms import Cursor
from api.dashboard.render import DashboardRoute, page
from api.dashboard.session import SignedIn
from api.deps import DbSession
from api.errors import InvalidRequest, NotFound
from api.kit.ids import parse_id
from api.kit.pagination import MAX_LIMIT
from api.kit.time import month_start, utcnow
from api.trace import service as trace_service
from api.trace.repository import TraceRepository
from api.usage import routes as usage_routes
from api.usage.repository import SUM_COLUMNS, UsageRepository

router = APIRouter(route_class=DashboardRoute)

PERIODS = {
    "month": "This month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "last_month": "Last month",
}
TOP = 10
LOG_PAGE = 50
DAY = timedelta(days=1)
# The chart's drawing units (its viewBox); CSS scales it to the page's width.
BAR_STEP, BAR_WIDTH, CHART_HEIGHT, LABEL_HEIGHT = 24, 16, 160, 16


@dataclass(frozen=True, slots=True)
class Chosen:
    """The filters as the form sent them, checked; `end` None means until now."""

    period: str
    start: datetime
    end: datetime | None
    key_id: str | None
    model: str | None

    def query(self) -> str:
        return _query(period=self.period, key_id=self.key_id, model=self.model)


def _query(**values: str | None) -> str:
    """A link's query string, without the empty filters."""
    return urlencode({name: value for name, value in values.items() if value})


def _chosen(period: str | None, key_id: str | None, model: str | None) -> Chosen:
    now = utcnow()
    this_month = month_start(now)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    period = period or "month"
    starts = {
        "month": (this_month, None),
        "7d": (today - 6 * DAY, None),
        "30d": (today - 29 * DAY, None),
        "last_month": (month_start(this_month - DAY), this_month),
    }
    if period not in starts:
        raise InvalidRequest(f"period: one of {', '.join(PERIODS)}.", param="period")
    start, end = starts[period]
    key, name = _key_and_model(key_id, model)
    return Chosen(period=period, start=start, end=end, key_id=key, model=name)


def _key_and_model(key_id: str | None, model: str | None) -> tuple[str | None, str | None]:
    model = (model or "").strip() or None
    if model is not None and len(model) > 200:  # as the API's `max_length`
        raise InvalidRequest("model: at most 200 characters.", param="model")
    return (key_id or "").strip() or None, model


def _days(start: datetime, end: datetime, by_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every UTC day of [start, end), those without requests as zeros."""
    found = {str(row["day"]): row for row in by_day}
    zero = dict.fromkeys(SUM_COLUMNS, 0)
    first: date = start.date()
    last: date = (end - timedelta(microseconds=1)).date()
    days = []
    while first <= last:
        name = first.isoformat()
        days.append({**zero, **found.get(name, {}), "day": name})
        first += DAY
    return days


def _chart(days: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of spend per day, in drawing units: the tallest day is the chart's height."""
    top = max((day["cost_micros"] for day in days), default=0)
    bars = []
    for index, day in enumerate(days):
        height = round(CHART_HEIGHT * day["cost_micros"] / top) if top > 0 else 0
        height = max(height, 0)  # a day of refunds draws no bar
        x = index * BAR_STEP + (BAR_STEP - BAR_WIDTH) // 2
        bars.append(
            {"x": x, "y": CHART_HEIGHT - height, "width": BAR_WIDTH, "height": height,
             "label": day["day"][8:], "label_x": x + BAR_WIDTH // 2, "day": day}
        )  # fmt: skip
    return {
        "width": max(len(days), 1) * BAR_STEP,
        "height": CHART_HEIGHT + LABEL_HEIGHT,
        "base": CHART_HEIGHT,
        "bars": bars,
        "top": top,
    }


def _tokens(row: dict[str, Any]) -> int:
    return int(row["input_tokens"]) + int(row["output_tokens"])


def _top(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ranked = sorted(rows, key=lambda row: row["cost_micros"], reverse=True)
    return [{**row, "tokens": _tokens(row)} for row in ranked[:TOP]]


async def _keys(session: DbSession, signed: SignedIn) -> list[Any] | None:
    """The tenant's keys for the filter's select, or None when there are too many to list."""
    listed = await key_service.list_keys(session, signed.principal, limit=MAX_LIMIT, cursor=None)
    return None if listed.has_more else sorted(listed.items, key=lambda key: key.name.lower())


@router.get("/usage")
async def show_usage(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    period: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
) -> Response:
    principal = signed.principal
    chosen = _chosen(period, key_id, model)
    where = usage_routes.usage_filter(
        principal, chosen.start, chosen.end, chosen.key_id, chosen.model
    )
    repository = UsageRepository(session, principal.tenant_id)
    by_key = await repository.grouped(where, "key")
    # Totals are summed from the rows by key, as `/v1/usage` sums them.
    totals = {name: sum(row[name] for row in by_key) for name in SUM_COLUMNS}
    # An open period's days end today (its filter's end is a second from now).
    days = _days(where.start, chosen.end or utcnow(), await repository.grouped(where, "day"))
    by_model = await repository.grouped(where, "model")
    cached = [row for row in by_key if row["cache_hits"]]
    cached.sort(key=lambda row: row["saved_micros"], reverse=True)
    return page(
        request, signed, "usage.html", nav="usage", chosen=chosen, periods=PERIODS,
        keys=await _keys(session, signed), where=where, totals=totals, tokens=_tokens(totals),
        days=days, chart=_chart(days), top_keys=_top(by_key), top_models=_top(by_model),
        cached_keys=cached[:TOP],
    )  # fmt: skip


@router.get("/usage/export.csv")
async def export_usage(
    request: Request,
    signed: SignedIn,
    period: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
) -> Response:
    chosen = _chosen(period, key_id, model)
    exported = await usage_routes.export_usage(
        request, signed.principal, "csv", chosen.start, chosen.end, chosen.key_id, chosen.model
    )
    exported.headers["Cache-Control"] = "no-store"  # as every page: a tenant's usage
    return exported


async def _key_names(session: DbSession, signed: SignedIn, ids: set[str]) -> dict[str, str]:
    repository = ApiKeyRepository(session, signed.principal.tenant_id)
    return {str(key.id): key.name for key in await repository.by_ids(sorted(map(uuid.UUID, ids)))}


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["created_at"]).astimezone(UTC)


@router.get("/logs")
async def list_logs(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: Cursor = None,
    key_id: str | None = None,
    model: str | None = None,
) -> Response:
    key, name = _key_and_model(key_id, model)
    body = await usage_routes.list_logs(
        session, signed.principal, limit=LOG_PAGE, cursor=cursor or None, key_id=key, model=name
    )
    entries = body["data"]
    names = await _key_names(session, signed, {entry["key_id"] for entry in entries})
    next_cursor = body["next_cursor"]
    older = _query(key_id=key, model=name, cursor=next_cursor) if next_cursor else None
    return page(
        request, signed, "logs.html", nav="logs", key_id=key, model=name, older=older,
        rows=[{"entry": entry, "at": _at(entry), "key_name": names.get(entry["key_id"])}
              for entry in entries],
        keys=await _keys(session, signed),
    )  # fmt: skip


@router.get("/logs/{event_id}")
async def show_log(
    request: Request, event_id: str, session: DbSession, signed: SignedIn
) -> Response:
    tenant_id = signed.principal.tenant_id
    event = await UsageRepository(session, tenant_id).get(parse_id(event_id, "request"))
    if event is None:
        raise NotFound(f"No request with id {event_id}.", param="id")
    trace = await TraceRepository(session, tenant_id).get(event.id)
    entry = usage_routes.log_entry(event, trace.trace_id if trace is not None else None)
    rendered = trace_service.render(trace, event) if trace is not None else None
    # The entry keeps its attempts when there was more than one; the trace keeps every one.
    attempts = entry["trace"] or (rendered["attempts"] if rendered is not None else [])
    names = await _key_names(session, signed, {entry["key_id"]})
    return page(
        request, signed, "log.html", nav="logs", entry=entry, at=event.created_at,
        key_name=names.get(entry["key_id"]), attempts=attempts, trace=rendered,
    )  # fmt: skip
