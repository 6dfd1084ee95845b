"""OpenAI-family endpoints: `POST /v1/chat/completions` and `GET /v1/models` (SPEC §5.2).

The body is forwarded as the client sent it, with the model name resolved and usage reporting
forced on for streams; only the fields the gateway acts on are checked here, the upstream
validates the rest (its 4xx is relayed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import GatewayDep, GatewayPrincipal, gateway_principal
from api.errors import AppError, InvalidRequest, UpstreamError, openai_body
from api.gateway import exposure as exposure_rules
from api.gateway import failover, resilience
from api.gateway import usage as usage_rules
from api.gateway.dialects import translated
from api.gateway.pipeline import Call, Gateway, record_refusal, start_call, upstream_body
from api.gateway.pricing import Usage
from api.gateway.providers.base import UpstreamRequest, UpstreamStream, done_with
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent
from api.kit.json_depth import check_depth

router = APIRouter(tags=["gateway"])
logger = logging.getLogger("tollgate.gateway")

CHAT_PATH = "/v1/chat/completions"
_DONE = b"data: [DONE]\n\n"


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


def _check_chat_body(body: dict[str, Any]) -> bool:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name is required.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages: a non-empty list of messages is required.", param="messages"
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise InvalidRequest("messages: each message needs a string 'role'.", param="messages")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidRequest(f"{name}: must be a positive integer.", param=name)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean.", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("stream_options: must be an object.", param="stream_options")
    return bool(stream)


@router.post(CHAT_PATH)
async def create_chat_completion(request: Request) -> Response:
    principal = await gateway_principal(request)
    gateway: Gateway = request.state.gateway
    request_id = request.state.request_id
    try:
        body = await read_json_object(request)
        stream = _check_chat_body(body)
        exposure = exposure_rules.chat(body, gateway.unknown_fields)
    except AppError as error:  # a bad body is still a request of this key's: log it, at no cost
        record_refusal(gateway, principal, request_id, CHAT_PATH, "", "", error)
        raise
    call = await start_call(
        gateway, principal, request_id, CHAT_PATH, body["model"], body,
        dialects=translated.DIALECTS, session=resilience.session_key(request.headers, body),
        exposure=exposure,
    )  # fmt: skip
    if call.trace is None:
        return await _answer(call, body, stream)
    return await failover.serve(call, lambda: _answer(call, body, stream))


async def _answer(call: Call, body: dict[str, Any], stream: bool) -> Response:
    """The answer from `call.provider` (run again by a cross-provider failover)."""
    if call.provider.dialect != "openai":  # Claude, Gemini: through the IR
        return await translated.respond(call, translated.CHAT, body, stream=stream)
    upstream = UpstreamRequest(
        path="/chat/completions", body=upstream_body(body, call, stream=stream), stream=stream
    )
    async with call.failures_recorded():
        if stream:
            return await _stream_chat(call, body, upstream)
        response = await call.provider.send(upstream)
        payload = _json_object(response.body, call.provider.name)
        reported = payload.get("usage")
        usage = (
            usage_rules.from_openai(reported)
            if isinstance(reported, dict)
            else usage_rules.estimate_completion(body, payload)
        )
        await call.finish(usage)
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), call.response_headers)


def _json_object(raw: bytes, provider: str) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise UpstreamError(f"The {provider} provider answered with something other than JSON.")
    return payload


async def _stream_chat(call: Call, body: dict[str, Any], upstream: UpstreamRequest) -> EventStream:
    stream = await call.provider.open_stream(upstream)
    options = body.get("stream_options")
    client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    # Not sse-starlette's EventSourceResponse: upstream events are already SSE-framed, and its
    # machinery measured ~30x the CPU per relayed chunk (see `api/gateway/relay.py`).
    return EventStream(_relay_chat(call, body, stream, client_wants_usage), call.response_headers)


async def _relay_chat(
    call: Call, body: dict[str, Any], stream: UpstreamStream, client_wants_usage: bool
) -> AsyncGenerator[bytes, None]:
    """Relay each upstream event as it arrives. The final `[DONE]` is held back until the
    request is metered and its usage event durable; whatever ends the stream is metered."""
    usage: Usage | None = None
    produced: list[bytes] = []
    frames: list[bytes] = []  # of the events that arrived with the one being read
    first_out = True
    status, error = 200, None
    tail = _DONE
    first = True

    def final_usage() -> Usage:
        return usage if usage is not None else usage_rules.estimate_chat(body, produced)

    try:
        async for event in stream.events():
            data = event.data
            if data == b"[DONE]":
                break
            if first:
                first = False
                elapsed = time.perf_counter() - call.started
                call.gateway.metrics.ttfb.labels(call.endpoint, call.provider.name).observe(elapsed)
            shown = True
            if b'"usage":{' in data or b'"usage": {' in data:
                reported, shown = _usage_chunk(data, call.provider.name, client_wants_usage)
                usage = reported or usage
            else:
                produced.append(data)
            if shown:
                frames.append(_frame(data))
            if frames and (not event.more or first_out):  # the first event goes out alone
                first_out = False
                yield b"".join(frames)
                frames.clear()
        else:  # the body ended without `[DONE]`
            raise UpstreamError(f"The {call.provider.name} stream ended before it was complete.")
    except (asyncio.CancelledError, GeneratorExit):
        # The client went away: read on for the usage upstream bills (`Call.abandon`).
        call.abandon(stream, ChatUsage(), final_usage())
        raise
    except Exception as exc:
        failure = exc if isinstance(exc, AppError) else UpstreamError("The stream failed.")
        if not isinstance(exc, AppError):
            logger.exception("relaying a %s stream failed", call.provider.name)
        status, error = failure.status_code, failure
        tail = b"data: " + orjson.dumps(openai_body(failure)) + b"\n\n" + _DONE
    done_with(stream, error)
    await call.finish(final_usage(), status=status, error=error)
    # What came with `[DONE]` (or before the failure) goes out with the end, after the call is
    # metered: a client that leaves now cannot cut the metering short.
    frames.append(tail)
    yield b"".join(frames)


class ChatUsage:
    """A chat stream's usage, from the chunk that reports it (asked for on every stream)."""

    def feed(self, event: SSEEvent) -> Usage | None:
        if b'"usage"' not in event.data:
            return None
        try:
            reported = orjson.loads(event.data).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return usage_rules.from_openai(reported) if isinstance(reported, dict) else None

    def end(self) -> Usage | None:
        return None


def _usage_chunk(data: bytes, provider: str, client_wants_usage: bool) -> tuple[Usage | None, bool]:
    """The usage a chunk reports, and whether the client sees the chunk: the usage-only chunk
    was asked for by the gateway, and a client that did not ask for it never sees it."""
    chunk = _json_object(data, provider)
    reported = chunk.get("usage")
    usage = usage_rules.from_openai(reported) if isinstance(reported, dict) else None
    return usage, client_wants_usage or chunk.get("choices") != []


def _frame(data: bytes) -> bytes:
    """One SSE event; every line of multi-line data keeps its own `data:` prefix."""
    if b"\n" not in data:
        return b"data: " + data + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


@router.get("/v1/models")
async def list_models(principal: GatewayPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    key = principal.key
    available = gateway.providers.available()
    if gateway.router is not None:  # and the providers the tenant brought its own key for
        available |= set((await gateway.router.tenant(key.tenant_id)).accounts)
    entries = [
        entry
        for entry in gateway.catalog.entries.values()
        if (key.allowed_providers is None or entry.provider in key.allowed_providers)
        and (key.allowed_models is None or entry.id in key.allowed_models)
        and (key.test or entry.provider in available)
    ]
    data = [
        {
            "id": entry.id,
            "object": "model",
            "created": entry.created,
            "owned_by": entry.provider,
            "type": "model",
            "display_name": entry.display_name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.created)),
            "provider": entry.provider,
            "pricing": entry.price.as_json(),
            "context_window": entry.context_window,
            "max_output_tokens": entry.max_output_tokens,
        }
        for entry in sorted(entries, key=lambda e: e.id)
    ]
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
