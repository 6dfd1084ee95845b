"""`client.search`: semantic search over the thread messages the caller may see."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from tollgate._http import Call
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.search import SearchResults

Role = Literal["user", "assistant", "tool"]


def _search(
    query: str,
    limit: int | NotGiven,
    thread_id: str | NotGiven,
    key_id: str | NotGiven,
    role: Role | NotGiven,
    min_score: float | NotGiven,
    start: datetime | NotGiven,
    end: datetime | NotGiven,
) -> Call:
    body = {
        "query": query,
        **given(
            limit=limit, thread_id=thread_id, key_id=key_id, role=role, min_score=min_score,
            start=start.isoformat() if isinstance(start, datetime) else start,
            end=end.isoformat() if isinstance(end, datetime) else end,
        ),
    }  # fmt: skip
    return Call("POST", "/v1/search", json=body)


class Search(SyncResource):
    def query(
        self,
        query: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        thread_id: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        role: Role | NotGiven = NOT_GIVEN,
        min_score: float | NotGiven = NOT_GIVEN,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
    ) -> SearchResults:
        """The messages closest in meaning to `query`, best first (`limit`, default 10).

        A standard key searches its own threads; a master key its tenant's (or one key's,
        with `key_id`). A turn is searchable a few seconds after it is stored
        (`threads.retrieve(id).indexed`)."""
        call = _search(query, limit, thread_id, key_id, role, min_score, start, end)
        return self._one(call, SearchResults)


class AsyncSearch(AsyncResource):
    async def query(
        self,
        query: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        thread_id: str | NotGiven = NOT_GIVEN,
        key_id: str | NotGiven = NOT_GIVEN,
        role: Role | NotGiven = NOT_GIVEN,
        min_score: float | NotGiven = NOT_GIVEN,
        start: datetime | NotGiven = NOT_GIVEN,
        end: datetime | NotGiven = NOT_GIVEN,
    ) -> SearchResults:
        """The messages closest in meaning to `query`, best first."""
        call = _search(query, limit, thread_id, key_id, role, min_score, start, end)
        return await self._one(call, SearchResults)
