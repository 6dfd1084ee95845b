"""OpenAI-family endpoints: `POST /v1/chat/completions` and `GET /v1/models` (SPEC §5.2).

The body is forwarded as the client sent it, with the model name resolved and usage reporting
forced on for streams; only the fields the gateway acts on are checked here, the upstream
validates the rest (its 4xx is relayed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.models import ApiKey
from api.deps import GatewayDep, GatewayPrincipal
from api.errors import InvalidRequest, UpstreamError, openai_body
from api.gateway import exposure as exposure_rules
from api.gateway import usage as usage_rules
from api.gateway.catalog import ModelEntry
from api.gateway.dialects import entry, translated
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import Call, Gateway, upstream_body
from api.gateway.providers.base import UpstreamRequest
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent, frame
from api.gateway.translate import ir, openai_chat, openai_chat_stream

router = APIRouter(tags=["gateway"])
logger = logging.getLogger("tollgate.gateway")

CHAT_PATH = "/v1/chat/completions"
_DONE = b"data: [DONE]\n\n"


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


def _check(body: dict[str, Any], unknown: UnknownFields) -> tuple[bool, Exposure]:
    return _check_chat_body(body), exposure_rules.chat(body, unknown)


@router.post(CHAT_PATH)
async def create_chat_completion(request: Request) -> Response:
    return await entry.proxy(request, ENDPOINT)


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
        payload = translated.json_answer(response.body, call.provider.name)
        reported = payload.get("usage")
        usage = (
            usage_rules.from_openai(reported)
            if isinstance(reported, dict)
            else usage_rules.estimate_completion(body, payload)
        )
        await call.finish(usage)
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), call.response_headers)


async def _stream_chat(call: Call, body: dict[str, Any], upstream: UpstreamRequest) -> EventStream:
    stream = await call.provider.open_stream(upstream)
    options = body.get("stream_options")
    client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    # Relayed as they came through the one relay every stream takes; only the chunks that end
    # the stream (usage, `[DONE]`, an error) are decoded, for metering and the end.
    deltas = translated.Passed(None, usage_rules.delta_text, _DECODED)
    relay = translated.relay_events(
        call, stream, openai_chat_stream.StreamDecoder(), _Verbatim(client_wants_usage),
        lambda: translated.estimable_request(
            openai_chat.parse_request, body, call.model, ("messages", "tools")
        ),
        deltas,
    )  # fmt: skip
    return EventStream(relay, call.response_headers)


# What has a chat chunk decoded (see `translated.Passed`): the usage, the end, an error.
_DECODED = (b'"usage":{', b'"usage": {', b"[DONE]", b'"error":', b'"error": ')


class _Verbatim(translated.ToClient):
    """Chat chunks relayed as they came. The usage-only chunk is asked for on every stream;
    a client that did not ask for it never sees it."""

    def __init__(self, client_wants_usage: bool) -> None:
        self._wants_usage = client_wants_usage

    def content(self, event: SSEEvent | None, _items: Sequence[ir.StreamEvent]) -> bytes:
        if event is None:
            return b""
        if not self._wants_usage and _usage_only(event.data):
            return b""
        return frame(event)

    def end(
        self,
        event: SSEEvent | None,
        _items: Sequence[ir.StreamEvent],
        terminal: ir.MessageEnd | ir.StreamError,
    ) -> bytes:
        if event is not None:  # `[DONE]`, or the provider's own error chunk
            return frame(event) if isinstance(terminal, ir.MessageEnd) else frame(event) + _DONE
        if isinstance(terminal, ir.MessageEnd):  # the body ended without `[DONE]`
            return _DONE
        # A failure on the gateway's side of the stream: an error chunk, then `[DONE]`.
        error = terminal.error or UpstreamError(terminal.message or "The stream failed.")
        return b"data: " + orjson.dumps(openai_body(error)) + b"\n\n" + _DONE


def _usage_only(data: bytes) -> bool:
    """The usage chunk with no choices (DeepSeek puts usage on its last choice chunk instead:
    that one is the client's)."""
    if b'"usage":{' not in data and b'"usage": {' not in data:
        return False
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(chunk, dict) and chunk.get("choices") == []


async def visible_models(key: ApiKey, gateway: Gateway) -> list[ModelEntry]:
    """The catalog's models `key` may use, with a provider configured for them, by id."""
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
    return sorted(entries, key=lambda e: e.id)


@router.get("/v1/models")
async def list_models(principal: GatewayPrincipal, gateway: GatewayDep) -> dict[str, Any]:
    entries = await visible_models(principal.key, gateway)
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
            "kind": entry.kind,
            "pricing": entry.price.as_json(),
            "context_window": entry.context_window,
            "max_output_tokens": entry.max_output_tokens,
        }
        for entry in entries
    ]
    return {
        "object": "list",
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _whole_body(body: dict[str, Any]) -> dict[str, Any]:
    return body  # Chat's body is what the budget reads


ENDPOINT = entry.Endpoint(CHAT_PATH, _check, _whole_body, _answer)
