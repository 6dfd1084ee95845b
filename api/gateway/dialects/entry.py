"""How every model endpoint starts (chat, Messages, Responses): the one preamble of a proxied
request, before its dialect renders the answer.

read and check the body → what its fields add to the worst case (`exposure`) → `start_call`
(model, access, budget) → `failover.serve` around the dialect's answer. A body refused on
the way is still a request of its key's: it is logged, at no cost.

`proxy` serves an HTTP request; `serve` is the same path from a body already read, for an
async job (`api.job`) that runs the endpoint later, in a worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from api.auth.service import Principal
from api.deps import gateway_principal
from api.errors import AppError, InvalidRequest
from api.gateway import failover, resilience
from api.gateway.dialects import translated
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import Call, Gateway, record_refusal, start_call
from api.kit.json_depth import check_depth

# A dialect's reading of a body: whether it streams, and what its fields add to the bill.
Check = Callable[[dict[str, Any], UnknownFields], tuple[bool, Exposure]]
# The dialect's answer from `call.provider`; run again by a cross-provider failover.
Answer = Callable[[Call, dict[str, Any], bool], Awaitable[Response]]


# What an endpoint that keeps state does to a body before it is checked (stored responses
# resolve `previous_response_id` into the history itself, so the reservation counts it).
Prepare = Callable[[Gateway, Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A model endpoint, as its dialect's routes module defines it."""

    path: str
    check: Check
    budget_view: Callable[[dict[str, Any]], dict[str, Any]]
    answer: Answer
    prepare: Prepare | None = None


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_depth(raw, body)
    return body


async def proxy(request: Request, endpoint: Endpoint) -> Response:
    """Answer one model request of `endpoint`'s dialect (see the module docstring)."""
    principal = await gateway_principal(request)
    gateway: Gateway = request.state.gateway
    request_id = request.state.request_id
    try:
        body = await read_json_object(request)
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint.path, "", "", error)
        raise
    return await serve(gateway, principal, request_id, endpoint, body, headers=request.headers)


async def serve(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    headers: Any = None,
    calls: list[Call] | None = None,
) -> Response:
    """The answer to `body` (`headers`: the request's, for a session id); `calls`, when given,
    receives the call, for its usage."""
    try:
        if endpoint.prepare is not None:
            body = await endpoint.prepare(gateway, principal, body)
        stream, exposure = endpoint.check(body, gateway.unknown_fields)
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint.path, "", "", error)
        raise
    call = await start_call(
        gateway, principal, request_id, endpoint.path, body["model"], endpoint.budget_view(body),
        dialects=translated.DIALECTS, exposure=exposure,
        session=resilience.session_key(headers or {}, body),
    )  # fmt: skip
    if calls is not None:
        calls.append(call)
    return await failover.serve(call, lambda: endpoint.answer(call, body, stream))
