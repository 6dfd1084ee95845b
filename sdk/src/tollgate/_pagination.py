"""Cursor pages (`{"object": "list", "data", "has_more", "next_cursor"}`, or OpenAI's
`last_id` and `?after=` for stored responses' items) that fetch the next page as you iterate.

    for key in client.keys.list():            # every key, a page at a time
    page = client.keys.list(limit=10)         # or one page: page.data, page.has_more
    async for key in async_client.keys.list():
    page = await async_client.keys.list(limit=10)
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from tollgate._http import AsyncHTTP, Call, SyncHTTP

T = TypeVar("T", bound=BaseModel)


def _parse(body: Any, model: type[T]) -> tuple[list[T], bool, str | None]:
    data = [model.model_validate(item) for item in body["data"]]
    cursor = body.get("next_cursor", body.get("last_id"))
    return data, bool(body.get("has_more")), cursor if isinstance(cursor, str) else None


def _next_call(call: Call, cursor: str) -> Call:
    return dataclasses.replace(call, params={**(call.params or {}), call.cursor_param: cursor})


class SyncPage(Generic[T]):
    """One page of a list; iterating it walks every later page too."""

    object = "list"

    def __init__(self, http: SyncHTTP, call: Call, model: type[T]) -> None:
        self._http, self._call, self._model = http, call, model
        self.data, self.has_more, self.next_cursor = _parse(http.request(call), model)

    def next_page(self) -> SyncPage[T] | None:
        if not self.has_more or self.next_cursor is None:
            return None
        return SyncPage(self._http, _next_call(self._call, self.next_cursor), self._model)

    def iter_pages(self) -> Iterator[SyncPage[T]]:
        page: SyncPage[T] | None = self
        while page is not None:
            yield page
            page = page.next_page()

    def __iter__(self) -> Iterator[T]:
        for page in self.iter_pages():
            yield from page.data

    def __repr__(self) -> str:
        return f"SyncPage(data={self.data!r}, has_more={self.has_more})"


class AsyncPage(Generic[T]):
    """One page of a list; `async for` over it walks every later page too."""

    object = "list"

    def __init__(self, http: AsyncHTTP, call: Call, model: type[T], body: Any) -> None:
        self._http, self._call, self._model = http, call, model
        self.data, self.has_more, self.next_cursor = _parse(body, model)

    async def next_page(self) -> AsyncPage[T] | None:
        if not self.has_more or self.next_cursor is None:
            return None
        return await _fetch(self._http, _next_call(self._call, self.next_cursor), self._model)

    async def iter_pages(self) -> AsyncIterator[AsyncPage[T]]:
        page: AsyncPage[T] | None = self
        while page is not None:
            yield page
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.data:
                yield item

    def __repr__(self) -> str:
        return f"AsyncPage(data={self.data!r}, has_more={self.has_more})"


async def _fetch(http: AsyncHTTP, call: Call, model: type[T]) -> AsyncPage[T]:
    return AsyncPage(http, call, model, await http.request(call))


class AsyncPaginator(Generic[T]):
    """What an async `list()` returns: await it for the first page, or `async for` over it
    for every item."""

    def __init__(self, http: AsyncHTTP, call: Call, model: type[T]) -> None:
        self._http, self._call, self._model = http, call, model

    def __await__(self) -> Generator[Any, None, AsyncPage[T]]:
        return _fetch(self._http, self._call, self._model).__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self
        async for item in page:
            yield item
