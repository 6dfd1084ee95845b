"""Anthropic Messages endpoints: `POST /v1/messages` and `POST /v1/messages/count_tokens`
(SPEC §5.2), for the Anthropic SDK (base URL without `/v1`) and coding agents.

A Claude model gets the client's body as sent (unknown fields, `cache_control`, `thinking`
blocks with their signatures included) with only the gateway's edits: the model name and the
output cap (`max_tokens`, clamped to the budget or supplied when missing). `anthropic-beta` and
`anthropic-version` pass through. Other models are translated (`dialects/translated.py`).
Errors are Anthropic-shaped (`api/error_handlers.py`), mid-stream ones an `event: error`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.models import ApiKey
from api.auth.service import Principal
from api.deps import gateway_principal
from api.errors import InvalidRequest, RateLimited, RequestTooLarge, UpstreamError
from api.gateway import exposure as exposure_rules
from api.gateway.dialects import entry, translated
from api.gateway.dialects.entry import read_json_object
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import (
    Call,
    Gateway,
    check_access,
    upstream_body,
)
from api.gateway.providers.base import Provider, UpstreamRequest, UpstreamStream
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent, frame
from api.gateway.translate import anthropic, anthropic_stream, ir
from api.shield.service import shielded

router = APIRouter(tags=["gateway"])

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
ESTIMATE_HEADER = "x-tollgate-token-count"
# The largest body counted here (a million-token prompt is about 4 MiB of text).
COUNT_MAX_BYTES = 8 * 1024 * 1024
_FORWARDED_HEADERS = ("anthropic-beta", "anthropic-version")


def forwarded_headers(request: Request) -> dict[str, str]:
    """The client's Anthropic headers, for an Anthropic upstream."""
    return {name: value for name in _FORWARDED_HEADERS if (value := request.headers.get(name))}


def budget_view(body: dict[str, Any]) -> dict[str, Any]:
    """What the reservation reads (`messages`, `tools`, `max_tokens`), the system prompt
    counted with the messages."""
    messages = body.get("messages")
    return {
        "messages": [body.get("system"), *(messages if isinstance(messages, list) else [])],
        "tools": body.get("tools"),
        "max_tokens": body.get("max_tokens"),
    }


def _check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name is required.", param="model")
    return model


def _check_body(body: dict[str, Any]) -> bool:
    _check_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages: a non-empty list of messages is required.", param="messages"
        )
    value = body.get("max_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequest("max_tokens: must be a positive integer.", param="max_tokens")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean.", param="stream")
    return bool(stream)


def _check(body: dict[str, Any], unknown: UnknownFields) -> tuple[bool, Exposure]:
    return _check_body(body), exposure_rules.messages(body, unknown)


@router.post(MESSAGES_PATH)
async def create_message(request: Request) -> Response:
    headers = forwarded_headers(request)

    def answer(call: Call, body: dict[str, Any], stream: bool) -> Awaitable[Response]:
        return _answer(call, body, stream, headers)

    return await entry.proxy(request, dataclasses.replace(ENDPOINT, answer=answer))


async def _answer(
    call: Call, body: dict[str, Any], stream: bool, headers: dict[str, str]
) -> Response:
    """The answer from `call.provider` (run again by a cross-provider failover)."""
    if call.provider.dialect != "anthropic":
        return await translated.respond(call, translated.MESSAGES, body, stream=stream)
    out = upstream_body(body, call, stream=False)
    out.setdefault("max_tokens", translated.output_cap(call))
    thinking = out.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if isinstance(budget, int) and isinstance(thinking, dict) and budget >= out["max_tokens"]:
        # A cap lowered to the budget must not leave thinking a larger one (Anthropic's 400).
        out["thinking"] = {**thinking, "budget_tokens": max(out["max_tokens"] - 1, 1)}
    upstream = UpstreamRequest(MESSAGES_PATH, out, stream, headers)
    async with call.failures_recorded():
        if stream:
            opened = await call.provider.open_stream(upstream)
            events = _relay(call, body, opened)
            return EventStream(events, call.response_headers)
        answer = await call.provider.send(upstream)
        payload = translated.json_answer(answer.body, call.provider.name)
        usage = anthropic.usage_from(payload.get("usage"))
        await call.finish(usage)
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), call.response_headers)


class _Verbatim(translated.ToClient):
    """Upstream Anthropic events relayed as they came (pings and unknown types included)."""

    def __init__(self) -> None:
        self._encoder = anthropic_stream.StreamEncoder()

    def content(self, event: SSEEvent | None, _items: Sequence[ir.StreamEvent]) -> bytes:
        return frame(event) if event is not None else b""

    def end(
        self,
        event: SSEEvent | None,
        _items: Sequence[ir.StreamEvent],
        terminal: ir.MessageEnd | ir.StreamError,
    ) -> bytes:
        if event is not None:  # message_stop or the provider's own error event
            return frame(event)
        return self._encoder.feed(terminal)


def _relay(call: Call, body: dict[str, Any], stream: UpstreamStream) -> AsyncGenerator[bytes, None]:
    # Built only if a prompt must be estimated (most streams report their usage).
    def request() -> ir.ChatRequest:
        fields = ("system", "messages", "tools")
        return translated.estimable_request(anthropic.parse_request, body, call.model, fields)

    decoder = anthropic_stream.StreamDecoder()
    deltas = translated.Passed(b"content_block_delta", anthropic_stream.delta_text)
    return translated.relay_events(call, stream, decoder, _Verbatim(), request, deltas)


async def counting_provider(
    gateway: Gateway, principal: Principal, provider: str, test: bool
) -> Provider:
    """Who counts: the first ready account (the tenant's own key first), else the registry's."""
    router = gateway.router
    if router is not None and not test:
        tenant = await router.tenant(principal.key.tenant_id)
        ready, _ = router.choose(provider, tenant)
        if ready and ready[0].provider.dialect in translated.DIALECTS:
            return shielded(ready[0].provider, tenant.shield)
        registry = gateway.providers.get(provider, test=False, dialects=translated.DIALECTS)
        return shielded(registry, tenant.shield)  # the tenant's secret shield, as for calls
    return gateway.providers.get(provider, test=test, dialects=translated.DIALECTS)


@router.post(COUNT_TOKENS_PATH)
async def count_tokens(request: Request) -> Response:
    """Exact for Claude models (the upstream counts); an o200k estimate for the others,
    marked `x-tollgate-token-count: estimated`. Not a model call: nothing is metered."""
    principal = await gateway_principal(request)
    gateway: Gateway = request.state.gateway
    body = await read_json_object(request)
    route = gateway.catalog.resolve(_check_model(body))
    check_access(principal, route)
    count_admitted(gateway, principal.key)
    test = principal.key.test
    provider = await counting_provider(gateway, principal, route.provider, test)
    if provider.dialect == "anthropic":
        out = {**body, "model": route.upstream_model}
        upstream = UpstreamRequest(COUNT_TOKENS_PATH, out, False, forwarded_headers(request))
        answer = await provider.send(upstream)
        payload = translated.json_answer(answer.body, provider.name)
        if not isinstance(payload.get("input_tokens"), int):
            raise UpstreamError(f"The {provider.name} provider sent a malformed token count.")
        return JSONBody(orjson.dumps(payload), {ESTIMATE_HEADER: "exact"})
    if len(await request.body()) > COUNT_MAX_BYTES:
        raise RequestTooLarge(
            f"Bodies over {COUNT_MAX_BYTES // (1024 * 1024)} MiB are not counted for this model."
        )
    # Counting is CPU work in proportion to the body: a worker thread does it (tiktoken lets go
    # of the GIL), so a large body does not stall every other request on the event loop.
    counted = {"input_tokens": await asyncio.to_thread(_estimate, body)}
    return JSONBody(orjson.dumps(counted), {ESTIMATE_HEADER: "estimated"})


def count_admitted(gateway: Gateway, key: ApiKey) -> None:
    """Counting is not a model call: it leaves the key's limits and counters alone. It is held
    to the key's `rpm` all the same, in this process, so a flood of counts cannot use up the
    provider account's own limits for everyone (Anthropic and Google count their models'
    prompts)."""
    if key.rpm is None:
        return
    now = time.time()
    minute = int(now // 60)
    seen, count = gateway.counting.get(key.id, (minute, 0))
    count = count if seen == minute else 0
    if count >= key.rpm:
        raise RateLimited(
            f"Rate limit of {key.rpm} requests per minute reached for this key.",
            headers={"retry-after": str(60 - int(now % 60))},
        )
    if len(gateway.counting) >= _MAX_COUNTED_KEYS:  # a minute's worth at most: start over
        gateway.counting.clear()
    gateway.counting[key.id] = (minute, count + 1)


_MAX_COUNTED_KEYS = 100_000


def _estimate(body: dict[str, Any]) -> int:
    return translated.prompt_estimate(anthropic.parse_request(body))


def _answer_unforwarded(call: Call, body: dict[str, Any], stream: bool) -> Awaitable[Response]:
    return _answer(call, body, stream, {})  # a job's: no client headers to forward


ENDPOINT = entry.Endpoint(MESSAGES_PATH, _check, budget_view, _answer_unforwarded)
