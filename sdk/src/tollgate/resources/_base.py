from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from tollgate._http import AsyncHTTP, Call, SyncHTTP
from tollgate._pagination import AsyncPaginator, SyncPage

T = TypeVar("T", bound=BaseModel)


class SyncResource:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

    def _one(self, call: Call, model: type[T]) -> T:
        return model.model_validate(self._http.request(call))

    def _page(self, call: Call, model: type[T]) -> SyncPage[T]:
        return SyncPage(self._http, call, model)


class AsyncResource:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

    async def _one(self, call: Call, model: type[T]) -> T:
        return model.model_validate(await self._http.request(call))

    def _page(self, call: Call, model: type[T]) -> AsyncPaginator[T]:
        return AsyncPaginator(self._http, call, model)
