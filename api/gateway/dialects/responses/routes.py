"""OpenAI Responses endpoint: `POST /v1/responses`, streaming and not (SPEC §5.2).

Stateful as at OpenAI, for every model: a response is stored in Tollgate's database unless the
request says `store: false` (`api/response`), and `previous_response_id` and `item_reference`
inputs are resolved from that store before the request is checked, reserved and sent, so the
reservation counts the whole history; so is `conversation` (`api/response/conversations.py`),
whose items the response reads and then adds to. `background: true` makes the response in an
async job (`api/job`), stored `queued` at once under the id the client polls.

An OpenAI model gets the client's body as sent (reasoning items and their `encrypted_content`,
`include`, `text` formats, custom and shell tools, unknown fields) with only the gateway's
edits: the model name, `max_output_tokens` no larger than what was reserved, `store: false`
(nothing of a tenant's is kept at OpenAI: Tollgate stores it, and asks for reasoning items'
`encrypted_content` so they can be sent back), and hosted tools OpenAI bills per call (web and
file search, code interpreter, image generation) dropped with an `X-Tollgate-Warning`, since
their fees are not in the usage the gateway meters. Its stream is relayed event by event as it
came. Other providers are reached through the IR (`dialects/translated.py`): DeepSeek via Chat
Completions, Claude and Gemini natively. Errors are OpenAI-shaped, a mid-stream one an `error`
event then `response.failed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth.service import Principal
from api.db import session_scope
from api.deps import gateway_principal
from api.errors import AppError, InvalidRequest
from api.gateway import exposure as exposure_rules
from api.gateway.dialects import entry, translated
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pipeline import Call, Gateway, upstream_body
from api.gateway.providers.base import UpstreamRequest, UpstreamStream
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent, frame
from api.gateway.translate import ir, responses, responses_stream
from api.response import service as response_service

router = APIRouter(tags=["gateway"])

RESPONSES_PATH = "/v1/responses"
# Providers whose hosts serve the Responses API themselves.
_NATIVE = frozenset({"openai"})
# Hosted tools billed per call on top of tokens (their type names carry dated variants).
_FAILED = b"response.failed"
_FEE_TOOLS = ("web_search", "file_search", "code_interpreter", "image_generation")
_ENCRYPTED = "reasoning.encrypted_content"
_FINAL_MARK, _INCOMPLETE_MARK = b"response.completed", b"response.incomplete"
_BACKGROUND_MARK = b'"background"'
logger = logging.getLogger("tollgate.gateway")


def budget_view(body: dict[str, Any]) -> dict[str, Any]:
    """What the reservation reads (`messages`, `tools`, `max_tokens`)."""
    return {
        "messages": [body.get("instructions"), body.get("input")],
        "tools": body.get("tools"),
        "max_tokens": body.get("max_output_tokens"),
    }


def _check_body(body: dict[str, Any]) -> bool:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a model name is required.", param="model")
    if body.get("background") not in (None, False):  # `true` is diverted before this
        raise InvalidRequest("background: must be a boolean.", param="background")
    given = body.get("input")
    if not (isinstance(given, str) and given) and not (isinstance(given, list) and given):
        raise InvalidRequest("input: a string or a non-empty list of items.", param="input")
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise InvalidRequest(
            "max_output_tokens: must be a positive integer.", param="max_output_tokens"
        )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: must be a boolean.", param="stream")
    return bool(stream)


def _check(body: dict[str, Any], unknown: UnknownFields) -> tuple[bool, Exposure]:
    return _check_body(body), exposure_rules.responses(body, unknown)


@router.post(RESPONSES_PATH)
async def create_response(request: Request) -> Response:
    if _BACKGROUND_MARK in await request.body():  # only then is a body read twice
        principal = await gateway_principal(request)
        body = await entry.read_json_object(request)
        if body.get("background") is True:
            return await _background(request, principal, body)
    return await entry.proxy(request, ENDPOINT)


async def _background(request: Request, principal: Principal, body: dict[str, Any]) -> Response:
    """`background: true`: an async job makes the response (the same pipeline, caps and
    metering, when it runs); the client gets it `queued` now and polls `GET /v1/responses/{id}`."""
    # Imported here: the job domain reads this module's ENDPOINT.
    from api.job import runner as job_runner
    from api.job import service as job_service

    gateway: Gateway = request.state.gateway
    assert gateway.sessionmaker is not None
    async with session_scope(gateway.sessionmaker) as session:
        job, shown = await job_service.submit_background_response(session, gateway, principal, body)
    try:
        queue = request.state.turns.jobs
        await queue.enqueue(job_runner.RUN, str(job.id), job_id=job_runner.queue_id(job.id))
    except Exception:  # stored: the jobs' recovery sweep sends it
        logger.warning("background response %s was stored but not queued", shown["id"])
    return JSONBody(orjson.dumps(shown))


# What the request being answered adds to the store (set by `_prepare`, read by `_answer`;
# both run in the request's task, a failover's second answer included).
_STORING: ContextVar[response_service.Storing | None] = ContextVar("storing", default=None)


async def _prepare(gateway: Gateway, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    if gateway.sessionmaker is None:  # a bare gateway: nothing stored, nothing to resolve
        return body
    async with session_scope(gateway.sessionmaker) as session:
        resolved, storing = await response_service.resolve(session, principal, body)
    _STORING.set(storing)
    return resolved


async def _answer(call: Call, body: dict[str, Any], stream: bool) -> Response:
    """The answer from `call.provider` (run again by a cross-provider failover)."""
    storing = _STORING.get()
    if call.provider.name not in _NATIVE or call.provider.dialect != "openai":
        chained = None  # what `_prepare` resolved out of the body: the response repeats it
        if storing is not None:
            chained = {"previous_response_id": storing.previous_response_id,
                       "conversation": storing.conversation_id}  # fmt: skip
        made = await translated.respond(
            call, translated.RESPONSES, body, stream=stream, repeat=chained
        )
        return await _stored(call, storing, made)
    out = upstream_body(body, call, stream=False, caps=("max_output_tokens",))
    out["store"] = False  # nothing of a tenant's kept at OpenAI: Tollgate stores it
    if storing is not None and storing.store:  # reasoning items, to be sent back later
        given = out.get("include")
        include: list[Any] = given if isinstance(given, list) else []
        if _ENCRYPTED not in include:
            out["include"] = [*include, _ENCRYPTED]
    dropped = _drop_fee_tools(out)
    upstream = UpstreamRequest("/responses", out, stream)
    async with call.failures_recorded():
        if stream:
            opened = await call.provider.open_stream(upstream)
            relayed = EventStream(_relay(call, out, opened), _headers(call, dropped))
            return await _stored(call, storing, relayed)
        answer = await call.provider.send(upstream)
        payload = translated.json_answer(answer.body, call.provider.name)
        usage = responses.usage_from(payload.get("usage"))
        if usage.input_tokens == 0 and usage.output_tokens == 0:  # a host that reports none
            usage = translated.estimated_usage(usage, _parsed(out, call), _output_text(payload))
        await call.finish(usage)
    payload["provider"] = call.provider.name
    if storing is not None:  # OpenAI saw the resolved history, with store: false
        payload["store"] = storing.store
        if storing.previous_response_id is not None:
            payload["previous_response_id"] = storing.previous_response_id
        if storing.conversation_id is not None:
            payload["conversation"] = {"id": storing.conversation_id}
    await _remember(call, storing, payload)
    return JSONBody(orjson.dumps(payload), _headers(call, dropped))


async def _stored(
    call: Call, storing: response_service.Storing | None, answer: Response
) -> Response:
    """`answer`, stored once made: a JSON body now, a stream when its final event passes."""
    if storing is None or not storing.keeps:
        return answer
    if isinstance(answer, EventStream):
        answer.stream = _storing_stream(call, storing, answer.stream)
    elif isinstance(answer, JSONBody):
        await _remember(call, storing, orjson.loads(bytes(answer.body)))
    return answer


async def _storing_stream(
    call: Call, storing: response_service.Storing, chunks: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """The relayed stream, unchanged; the response in its final event is stored before that
    event goes out, so a client that chains on it at once finds it."""
    try:
        async for chunk in chunks:
            if _FINAL_MARK in chunk or _INCOMPLETE_MARK in chunk:
                final = _final_response(chunk)
                if final is not None:
                    await _remember(call, storing, final)
            yield chunk
    finally:
        await chunks.aclose()


def _final_response(chunk: bytes) -> dict[str, Any] | None:
    for frame_bytes in chunk.split(b"\n\n"):
        for line in frame_bytes.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            kind = data.get("type") if isinstance(data, dict) else None
            if kind in ("response.completed", "response.incomplete"):
                response = data.get("response")
                return response if isinstance(response, dict) else None
    return None


async def _remember(
    call: Call, storing: response_service.Storing | None, payload: dict[str, Any]
) -> None:
    """Store the response; a store that fails is logged, and the answer still goes out."""
    gateway = call.gateway
    if storing is None or not storing.keeps or gateway.sessionmaker is None:
        return
    try:
        async with session_scope(gateway.sessionmaker) as session:
            await response_service.remember(
                session, call.principal, storing, payload,
                retention_days=gateway.response_retention_days,
            )  # fmt: skip
    except Exception:
        logger.exception("response %s of request %s was not stored", payload.get("id"),
                         call.request_id)  # fmt: skip


def _drop_fee_tools(out: dict[str, Any]) -> list[str]:
    """Remove the hosted tools billed per call from `out`; their types, for the warning."""
    tools = out.get("tools")
    if not isinstance(tools, list):
        return []
    kept, dropped = [], []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(_FEE_TOOLS):
            dropped.append(kind)
        else:
            kept.append(tool)
    if dropped:
        out["tools"] = kept
        choice = out.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
            allowed = [t for t in choice.get("tools") or [] if _kept(t, dropped)]
            choice = {**choice, "tools": allowed} if allowed else None
        elif isinstance(choice, dict) and not _kept(choice, dropped):
            choice = None  # it named a tool that is gone
        if choice is None or not kept:  # nothing left to require or choose
            out.pop("tool_choice", None)
        else:
            out["tool_choice"] = choice
    return dropped


def _kept(tool: Any, dropped: list[str]) -> bool:
    return not (isinstance(tool, dict) and tool.get("type") in dropped)


def _headers(call: Call, dropped: list[str]) -> dict[str, str]:
    """The call's headers, its warning naming the hosted tools dropped too."""
    call.warn([f"tool type {kind!r} dropped: billed per call" for kind in dropped])
    return call.response_headers


def _parsed(body: dict[str, Any], call: Call) -> ir.ChatRequest:
    """The request in the IR, only to estimate a prompt the upstream did not count; a body the
    translator does not know (the upstream accepted it) is estimated from its JSON."""
    fields = ("instructions", "input", "tools")
    return translated.estimable_request(responses.parse_request, body, call.model, fields)


def _output_text(payload: dict[str, Any]) -> list[str]:
    try:
        return translated.response_text(responses.parse_response(payload))
    except AppError:
        return []


class _Verbatim(translated.ToClient):
    """Upstream Responses events relayed as they came; an error of the gateway's own (a stream
    broken off) is written after them, numbered on from the last one."""

    def __init__(self) -> None:
        self._events = 0
        self._start: ir.MessageStart | None = None

    def content(self, event: SSEEvent | None, items: Sequence[ir.StreamEvent]) -> bytes:
        if event is None:
            return b""
        self._events += 1
        if self._start is None and items and isinstance(items[0], ir.MessageStart):
            self._start = items[0]
        return frame(event)

    def end(
        self,
        event: SSEEvent | None,
        _items: Sequence[ir.StreamEvent],
        terminal: ir.MessageEnd | ir.StreamError,
    ) -> bytes:
        encoder = responses_stream.StreamEncoder(created=int(time.time()))
        if event is None:
            encoder.relayed(self._start, self._events)
            return encoder.feed(terminal)
        # response.completed or .incomplete or .failed, or an `error` event: the stream ends
        # there, with the `response.failed` that follows one, as the API ends a failure.
        failed = event.event == _FAILED or event.data.startswith(b'{"type":"' + _FAILED)
        if isinstance(terminal, ir.MessageEnd) or failed:
            return frame(event)
        encoder.relayed(self._start, self._events + 1)
        return frame(event) + encoder.failed(terminal)


def _relay(call: Call, body: dict[str, Any], stream: UpstreamStream) -> AsyncGenerator[bytes, None]:
    decoder = responses_stream.StreamDecoder()
    deltas = translated.Passed(b"response.output_text.delta", responses_stream.delta_text)
    return translated.relay_events(
        call, stream, decoder, _Verbatim(), lambda: _parsed(body, call), deltas
    )


ENDPOINT = entry.Endpoint(RESPONSES_PATH, _check, budget_view, _answer, _prepare)
