"""`client.usage` (spend and tokens per key, model or day; the CSV export) and `client.logs`
(the request log). A master key sees its whole tenant; a standard key only itself."""

from __future__ import annotations

import csv
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import IO, Literal

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.usage import CacheStats, Log, Trace, Usage, UsageExportRow

GroupBy = Literal["key", "model", "day"]
ExportTarget = str | os.PathLike[str] | IO[bytes]


def _query(
    start: datetime | NotGiven,
    end: datetime | NotGiven,
    key_id: str | NotGiven,
    model: str | NotGiven,
    **extra: str | NotGiven,
) -> dict[str, object]:
    return given(start=start, end=end, key_id=key_id, model=model, **extra)


def _export(
    start: datetime | NotGiven,
    end: datetime | NotGiven,
    key_id: str | NotGiven,
    model: str | NotGiven,
) -> Call:
    params = _query(start, end, key_id, model, format="csv")
    return Call("GET", "/v1/usage/export", params=params, headers={"Accept": "text/csv"})


class _Lines:
    """Text chunks in, lines out with their endings (the csv module reads quoted newlines)."""

    def __init__(self) -> None:
        self.rest = ""

    def feed(self, chunk: str) -> list[str]:
        lines = (self.rest + chunk).splitlines(keepends=True)
        self.rest = lines.pop() if lines and not lines[-1].endswith(("\n", "\r")) else ""
        return lines


def _rows(
    lines: list[str], header: list[str] | None
) -> tuple[list[UsageExportRow], list[str] | None]:
    rows = list(csv.reader(lines))
    if header is None and rows:
        header, rows = rows[0], rows[1:]
    names = header or []
    parsed = [UsageExportRow.model_validate(dict(zip(names, row, strict=False))) for row in rows]
    return parsed, header


def _cache_stats(
    start: datetime | NotGiven, end: datetime | NotGiven, key_id: str | NotGiven
) -> Call:
    return Call("GET", "/v1/cache/stats", params=given(start=start, end=end, key_id=key_id))


class UsageReports(SyncResource):
    def cache_stats(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
    ) -> CacheStats:
        """What the response caches saved in [start, end) (default: this month so far)."""
        return self._one(_cache_stats(start, end, key_id), CacheStats)

    def query(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
        group_by: GroupBy | NotGiven = NOT_GIVEN,
    ) -> Usage:
        """Requests, tokens and cost in [start, end) (default: this month so far), per key,
        plus per model or UTC day with `group_by`; `totals` sums them."""
        params = _query(start, end, key_id, model, group_by=group_by)
        return self._one(Call("GET", "/v1/usage", params=params), Usage)

    def export(
        self,
        file: ExportTarget,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> int:
        """Stream the request log as CSV into `file` (a path, or a file opened in binary
        mode); returns the bytes written."""
        written = 0
        with self._http.stream(_export(start, end, key_id, model)) as response:
            if isinstance(file, str | os.PathLike):
                with open(file, "wb") as out:
                    for chunk in response.iter_bytes():
                        written += out.write(chunk)
            else:
                for chunk in response.iter_bytes():
                    written += file.write(chunk)
        return written

    def iter_export(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> Iterator[UsageExportRow]:
        """The CSV export's rows as they stream in, oldest first."""
        with self._http.stream(_export(start, end, key_id, model)) as response:
            splitter, header = _Lines(), None
            for chunk in response.iter_text():
                rows, header = _rows(splitter.feed(chunk), header)
                yield from rows
            yield from _rows([splitter.rest] if splitter.rest else [], header)[0]


class AsyncUsageReports(AsyncResource):
    async def cache_stats(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
    ) -> CacheStats:
        """What the response caches saved in [start, end) (default: this month so far)."""
        return await self._one(_cache_stats(start, end, key_id), CacheStats)

    async def query(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
        group_by: GroupBy | NotGiven = NOT_GIVEN,
    ) -> Usage:
        """Requests, tokens and cost in [start, end), per key (and model or day)."""
        params = _query(start, end, key_id, model, group_by=group_by)
        return await self._one(Call("GET", "/v1/usage", params=params), Usage)

    async def export(
        self,
        file: ExportTarget,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> int:
        """Stream the request log as CSV into `file`; returns the bytes written. (The file is
        written with blocking calls: pass a path on a local disk.)"""
        written = 0
        async with self._http.stream(_export(start, end, key_id, model)) as response:
            if isinstance(file, str | os.PathLike):
                with open(file, "wb") as out:  # noqa: ASYNC230 - local chunks, as httpx writes
                    async for chunk in response.aiter_bytes():
                        written += out.write(chunk)
            else:
                async for chunk in response.aiter_bytes():
                    written += file.write(chunk)
        return written

    async def iter_export(
        self,
        *,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> AsyncIterator[UsageExportRow]:
        """The CSV export's rows as they stream in, oldest first."""
        async with self._http.stream(_export(start, end, key_id, model)) as response:
            splitter, header = _Lines(), None
            async for chunk in response.aiter_text():
                rows, header = _rows(splitter.feed(chunk), header)
                for row in rows:
                    yield row
            for row in _rows([splitter.rest] if splitter.rest else [], header)[0]:
                yield row


def _logs(
    limit: int | NotGiven, cursor: str | NotGiven, key_id: str | NotGiven, model: str | NotGiven
) -> Call:
    return Call(
        "GET", "/v1/logs", params=given(limit=limit, cursor=cursor, key_id=key_id, model=model)
    )


class Logs(SyncResource):
    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> SyncPage[Log]:
        """The request log, newest first: every call, refusals included, with its cost."""
        return self._page(_logs(limit, cursor, key_id, model), Log)

    def trace(self, trace_id: str) -> Trace:
        """One request's steps and upstream attempts, by its trace id (its `x-trace-id`, else
        its request id)."""
        return self._one(Call("GET", f"/v1/traces/{segment(trace_id)}"), Trace)


class AsyncLogs(AsyncResource):
    def list(
        self,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        cursor: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        model: str | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[Log]:
        """The request log, newest first."""
        return self._page(_logs(limit, cursor, key_id, model), Log)

    async def trace(self, trace_id: str) -> Trace:
        """One request's steps and upstream attempts, by its trace id."""
        return await self._one(Call("GET", f"/v1/traces/{segment(trace_id)}"), Trace)
