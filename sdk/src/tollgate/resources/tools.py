"""`client.tools`: webhook tools a tenant registers (master key) and thread turns may use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate._http import Call, segment
from tollgate._pagination import AsyncPaginator, SyncPage
from tollgate._types import NOT_GIVEN, NotGiven, given
from tollgate.resources._base import AsyncResource, SyncResource
from tollgate.types.shared import Deleted
from tollgate.types.tool import Tool

_PATH = "/v1/tools"


def _create(
    name: str,
    input_schema: Mapping[str, Any],
    webhook_url: str,
    description: str | NotGiven,
    timeout_ms: int | NotGiven,
) -> Call:
    body = {
        "name": name,
        "input_schema": dict(input_schema),
        "webhook_url": webhook_url,
        **given(description=description, timeout_ms=timeout_ms),
    }
    # Not deduplicated by Tollgate: never repeated once it may have arrived.
    return Call("POST", _PATH, json=body, idempotent=False)


def _list(limit: int | NotGiven, cursor: str | NotGiven) -> Call:
    return Call("GET", _PATH, params=given(limit=limit, cursor=cursor))


class Tools(SyncResource):
    def create(
        self,
        *,
        name: str,
        input_schema: Mapping[str, Any],
        webhook_url: str,
        description: str | NotGiven = NOT_GIVEN,
        timeout_ms: int | NotGiven = NOT_GIVEN,
    ) -> Tool:
        """Register a tool: when a turn offers it and the model calls it, Tollgate POSTs
        `{"tool_call_id", "tool", "input", "thread_id", "key_id"}` to `webhook_url`, signed
        with the `signing_secret` in this answer (shown once), and feeds back its
        `{"content", "is_error"?}`. `input_schema` is a JSON Schema for an object."""
        return self._one(_create(name, input_schema, webhook_url, description, timeout_ms), Tool)

    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> SyncPage[Tool]:
        return self._page(_list(limit, cursor), Tool)

    def retrieve(self, tool_id: str) -> Tool:
        return self._one(Call("GET", f"{_PATH}/{segment(tool_id)}"), Tool)

    def delete(self, tool_id: str) -> Deleted:
        return self._one(Call("DELETE", f"{_PATH}/{segment(tool_id)}"), Deleted)

    def rotate_secret(self, tool_id: str) -> Tool:
        """A new `signing_secret` (shown once); the old one stops signing at once."""
        return self._one(Call("POST", f"{_PATH}/{segment(tool_id)}/rotate-secret"), Tool)


class AsyncTools(AsyncResource):
    async def create(
        self,
        *,
        name: str,
        input_schema: Mapping[str, Any],
        webhook_url: str,
        description: str | NotGiven = NOT_GIVEN,
        timeout_ms: int | NotGiven = NOT_GIVEN,
    ) -> Tool:
        """Register a tool; its `signing_secret` is in this answer only."""
        call = _create(name, input_schema, webhook_url, description, timeout_ms)
        return await self._one(call, Tool)

    def list(
        self, *, limit: int | NotGiven = NOT_GIVEN, cursor: str | NotGiven = NOT_GIVEN
    ) -> AsyncPaginator[Tool]:
        return self._page(_list(limit, cursor), Tool)

    async def retrieve(self, tool_id: str) -> Tool:
        return await self._one(Call("GET", f"{_PATH}/{segment(tool_id)}"), Tool)

    async def delete(self, tool_id: str) -> Deleted:
        return await self._one(Call("DELETE", f"{_PATH}/{segment(tool_id)}"), Deleted)

    async def rotate_secret(self, tool_id: str) -> Tool:
        """A new `signing_secret` (shown once); the old one stops signing at once."""
        return await self._one(Call("POST", f"{_PATH}/{segment(tool_id)}/rotate-secret"), Tool)
