"""How every model endpoint starts (chat, Messages, Responses): the one preamble of a proxied
request, before its dialect renders the answer.

read and check the body → what its fields add to the worst case (`exposure`) → `start_call`
(model, access, budget) → `failover.serve` around the dialect's answer. A body refused on
the way is still a request of its key's: it is logged, at no cost.

`proxy` serves an HTTP request; `serve` is the same path from a body already read, for an
async job (`api.job`) that runs the endpoint later, in a worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from api.auth.service import Principal
from api.deps import gateway_principal
from api.errors import AppError, InvalidRequest
from api.gateway import cache as response_cache
from api.gateway import failover, resilience, semantic, traces
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import translated
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import Call, Gateway, record_refusal, start_call
from api.gateway.pricing import Price, Usage, cost_micros
from api.gateway.relay import EventStream, JSONBody
from api.kit.json_depth import check_depth

logger = logging.getLogger("tollgate.gateway")

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
    timing = traces.of_request(request.state)
    principal = await gateway_principal(request)
    timing.step("auth")
    gateway: Gateway = request.state.gateway
    request_id = request.state.request_id
    try:
        body = await read_json_object(request)
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint.path, "", "", error, timing=timing)
        raise
    return await serve(
        gateway, principal, request_id, endpoint, body, headers=request.headers, timing=timing
    )


async def serve(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    headers: Any = None,
    calls: list[Call] | None = None,
    timing: traces.Timing | None = None,
) -> Response:
    """The answer to `body` (`headers`: the request's, for a session id); `calls`, when given,
    receives the call, for its usage; `timing`: the request's steps so far."""
    timing = timing or traces.Timing(request_id)
    try:
        if endpoint.prepare is not None:
            body = await endpoint.prepare(gateway, principal, body)
        stream, exposure = endpoint.check(body, gateway.unknown_fields)
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint.path, "", "", error, timing=timing)
        raise
    timing.step("body")
    looked = await _cache_lookup(gateway, principal, endpoint.path, body, headers, stream)
    session = resilience.session_key(headers or {}, body)
    if session is not None:  # one tenant's "conversation-1" is not another's
        session = f"{principal.tenant_id.hex}:{session}"
    if looked is not None and looked.key is not None and gateway.cache is not None:
        try:
            hit = await response_cache.fetch(gateway.cache, looked.key)
        except Exception:  # a cache that cannot be read is a miss
            logger.exception("the response cache could not be read")
            hit = None
        score: float | None = None
        if hit is None and looked.question is not None:
            hit, score = await _similar(gateway, principal, looked)
        if hit is not None and hit.stream == stream:
            timing.step("cache", attrs={"hit": "exact" if score is None else "semantic"})
            return await _answer_from_cache(
                gateway, principal, request_id, endpoint, body, hit, looked, session, calls,
                score=score, timing=timing,
            )  # fmt: skip
    if looked is not None:
        timing.step("cache")
    call = await start_call(
        gateway, principal, request_id, endpoint.path, body["model"], endpoint.budget_view(body),
        dialects=translated.DIALECTS, exposure=exposure, session=session, timing=timing,
    )  # fmt: skip
    if calls is not None:
        calls.append(call)
    response = await failover.serve(call, lambda: endpoint.answer(call, body, stream))
    if looked is not None:
        _keep_if_complete(gateway, call, endpoint.path, looked, response, stream)
    return response


async def _cache_lookup(
    gateway: Gateway,
    principal: Principal,
    path: str,
    body: dict[str, Any],
    headers: Any,
    stream: bool,
) -> response_cache.Lookup | None:
    """The response cache's view of this request (None: the tenant's cache is off)."""
    router = gateway.router
    if router is None or gateway.cache is None or principal.key.test:
        return None  # a test key's answers are the mock's, and free: nothing to save
    tenant = await router.tenant(principal.key.tenant_id)
    if tenant.cache is None:
        return None
    try:
        model = gateway.catalog.resolve(body["model"]).entry.id
    except AppError:  # refused by `start_call`, as ever
        return None
    looked = response_cache.lookup(
        tenant.cache, principal.key.tenant_id.hex, path, model, body, headers, stream
    )
    if (
        looked is not None
        and looked.key is not None
        and tenant.semantic is not None
        and gateway.semantic is not None
        and gateway.semantic_entries is not None
    ):
        looked.semantic = tenant.semantic
        looked.question = semantic.question(principal.key.tenant_id.hex, path, model, body)
    return looked


async def _similar(
    gateway: Gateway, principal: Principal, looked: response_cache.Lookup
) -> tuple[response_cache.Hit | None, float | None]:
    """The stored answer of the nearest question asked in other words, and its score; a vector
    store or model that fails only costs the hit."""
    index, entries, store = gateway.semantic, gateway.semantic_entries, gateway.cache
    question = looked.question
    if index is None or entries is None or store is None or question is None:
        return None, None
    try:
        point = await index.nearest_prompt(
            question.text, principal.key.tenant_id, question.group, looked.semantic.threshold
        )
        if point is None:
            return None, None
        key = await entries.answer_key(point.id)
        hit = await response_cache.fetch(store, key) if key is not None else None
    except Exception:
        logger.exception("the semantic cache could not be asked")
        return None, None
    return (hit, point.score) if hit is not None else (None, None)


async def _answer_from_cache(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: Endpoint,
    body: dict[str, Any],
    hit: response_cache.Hit,
    looked: response_cache.Lookup,
    session: str | None,
    calls: list[Call] | None,
    *,
    score: float | None = None,
    timing: traces.Timing | None = None,
) -> Response:
    """A hit (`score`: a semantic one): the key's access, status and limits apply as to any
    request; nothing reaches the provider; it bills the tenant's fraction of what it saved
    (free by default)."""
    fraction = looked.settings.billed_fraction

    def bill(_entry: ModelEntry, price: Price) -> Usage:
        return Usage(fee_micros=math.ceil(cost_micros(hit.usage, price) * fraction))

    call = await start_call(
        gateway, principal, request_id, endpoint.path, body["model"], {},
        dialects=translated.DIALECTS, session=session, worst=bill, timing=timing,
    )  # fmt: skip
    call.trace = None  # no attempt upstream
    call.cache, call.saved = ("exact" if score is None else "semantic"), hit.usage
    if calls is not None:
        calls.append(call)
    await call.finish(call.worst or Usage())
    said = "EXACT_HIT" if score is None else "SEMANTIC_HIT"
    headers = {**call.response_headers, "X-Cache": said, "X-Cache-TTL": str(hit.ttl_left)}
    if score is not None:
        headers["X-Semantic-Score"] = f"{score:.4f}"
    if hit.stream:
        return EventStream(response_cache.replay(hit.body), headers)
    return JSONBody(hit.body, headers)


async def _remember_question(
    gateway: Gateway, call: Call, path: str, looked: response_cache.Lookup, data: bytes
) -> None:
    """Index the question of an answer just stored, if the semantic cache may serve it."""
    index, entries, question = gateway.semantic, gateway.semantic_entries, looked.question
    if index is None or entries is None or question is None or looked.key is None:
        return
    if len(semantic.answer_text(path, data)) < semantic.MIN_ANSWER:
        return
    tenant_id = call.principal.key.tenant_id
    point = semantic.point_id(looked.key)
    evicted = await entries.add(
        tenant_id.hex, point, looked.key, looked.settings.ttl_seconds,
        looked.semantic.max_entries,
    )  # fmt: skip
    await index.remember_prompt(question.text, point, tenant_id, question.group)
    await index.forget_prompts(evicted)


def _keep_if_complete(
    gateway: Gateway,
    call: Call,
    path: str,
    looked: response_cache.Lookup,
    response: Response,
    stream: bool,
) -> None:
    """Say what the cache did in the answer's headers, and store the answer once it is whole."""
    said = [(b"x-cache", b"MISS")]
    if looked.skip is not None:
        said.append((b"x-cache-skip-reason", looked.skip.encode()))
    response.raw_headers += said
    key, store = looked.key, gateway.cache
    if key is None or store is None or response.status_code != 200:
        return
    ttl = looked.settings.ttl_seconds

    async def keep(data: bytes) -> None:
        usage = call.usage
        if (
            usage is None
            or call.finished is False
            or not response_cache.complete(path, stream, data)
        ):
            return
        try:
            await response_cache.keep(store, key, ttl, data, stream, call.provider.name, usage)
            await _remember_question(gateway, call, path, looked, data)
        except Exception:  # a cache that cannot store only costs a later hit
            logger.exception("could not store an answer in the response cache")

    if isinstance(response, EventStream):
        response.stream = response_cache.recorded(response.stream, keep)
    elif isinstance(response, JSONBody):
        response.background = BackgroundTask(keep, bytes(response.body))
