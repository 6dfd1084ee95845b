"""`client.responses`: the Responses API's stored responses (`store`, the default), read and
deleted with the key that made them or the tenant's master key. Creating one is a model call:
`client.openai(api_key=…).responses.create(…)`."""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.response import Response, ResponseDeleted, ResponseItem

_PATH = "/v1/responses"


def _items(
    response_id: str,
    limit: int | NotGiven,
    order: Literal["asc", "desc"] | NotGiven,
    after: str | NotGiven,
) -> Call:
    path = f"{_PATH}/{segment(response_id)}/input_items"
    params = given(limit=limit, order=order, after=after)
    return Call("GET", path, params=params, cursor_param="after")


class InputItems(SyncResource):
    def list(
        self,
        response_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
        after: str | NotGiven = NOT_GIVEN,
    ) -> SyncPage[ResponseItem]:
        """The items a response was made from (its history included), newest first."""
        return self._page(_items(response_id, limit, order, after), ResponseItem)


class AsyncInputItems(AsyncResource):
    def list(
        self,
        response_id: str,
        *,
        limit: int | NotGiven = NOT_GIVEN,
        order: Literal["asc", "desc"] | NotGiven = NOT_GIVEN,
        after: str | NotGiven = NOT_GIVEN,
    ) -> AsyncPaginator[ResponseItem]:
        """The items a response was made from (its history included), newest first."""
        return self._page(_items(response_id, limit, order, after), ResponseItem)


class Responses(SyncResource):
    @cached_property
    def input_items(self) -> InputItems:
        return InputItems(self._http)

    def retrieve(self, response_id: str) -> Response:
        return self._one(Call("GET", f"{_PATH}/{segment(response_id)}"), Response)

    def delete(self, response_id: str) -> ResponseDeleted:
        """Delete a stored response and its items (a later `previous_response_id` naming it
        is a 404)."""
        return self._one(Call("DELETE", f"{_PATH}/{segment(response_id)}"), ResponseDeleted)


class AsyncResponses(AsyncResource):
    @cached_property
    def input_items(self) -> AsyncInputItems:
        return AsyncInputItems(self._http)

    async def retrieve(self, response_id: str) -> Response:
        return await self._one(Call("GET", f"{_PATH}/{segment(response_id)}"), Response)

    async def delete(self, response_id: str) -> ResponseDeleted:
        """Delete a stored response and its items."""
        path = f"{_PATH}/{segment(response_id)}"
        return await self._one(Call("DELETE", path), ResponseDeleted)
