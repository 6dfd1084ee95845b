"""Calling any model from an IR request, through the proxy pipeline, for Tollgate's own features
(thread turns and their tool loops).

Each call is an ordinary proxied request: `start_call` (access control, budget reservation),
the provider in its own wire format (rendered with the family translator, parsed back to IR),
and `Call.finish` (metering, settlement, one durable usage event). A tool loop makes one call per
round, so one usage event per round.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from api.auth.service import Principal
from api.errors import AppError
from api.gateway import failover
from api.gateway.dialects import translated
from api.gateway.pipeline import Call, Gateway, start_call
from api.gateway.pricing import Usage
from api.gateway.providers.base import UpstreamStream
from api.gateway.translate import ir, openai_chat
from api.gateway.translate.fields import upstream_body

logger = logging.getLogger("tollgate.gateway")

T = TypeVar("T")


@dataclass(slots=True)
class Completion:
    response: ir.ChatResponse
    cost_micros: int
    provider: str
    model: str  # the catalog id the request resolved to


def _reservation_body(request: ir.ChatRequest) -> dict[str, Any]:
    """What the budget reads (`messages`, `tools`, the output cap), in the Chat shape."""
    return openai_chat.render_request(request)


def _tool_calls(parts: list[ir.Part]) -> int:
    return sum(isinstance(p, ir.ToolCall) for p in parts)


async def _start(
    gateway: Gateway, principal: Principal, request_id: str, endpoint: str, request: ir.ChatRequest
) -> Call:
    body = _reservation_body(request)
    return await start_call(
        gateway, principal, request_id, endpoint, request.model, body, dialects=translated.DIALECTS
    )


async def complete(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: str,
    request: ir.ChatRequest,
) -> Completion:
    """One non-streaming model call; any failure is metered (cost 0) and raised."""
    call = await _start(gateway, principal, request_id, endpoint, request)

    async def answer() -> Completion:  # from `call.provider`, again after a failover
        async with call.failures_recorded():
            upstream = translated.upstream_request(call, copy.copy(request), stream=False)
            sent = await call.provider.send(upstream)
            payload = translated.json_answer(sent.body, call.provider.name)
            dialect, name = call.provider.dialect, call.provider.name
            try:
                response = upstream_body(translated.PARSERS[dialect], payload, name)
            except AppError as error:  # an answer we cannot read was still billed upstream
                usage = translated.reported_usage(dialect, payload)
                await call.finish(usage, status=error.status_code, error=error)
                raise
            call.tool_calls = _tool_calls(response.parts)
            cost = await call.finish(response.usage)
        return Completion(response, cost, call.provider.name, call.model)

    return await _served(call, answer)


async def _served(call: Call, answer: Callable[[], Awaitable[T]]) -> T:
    """`answer()`, failed over to an equivalent model of another provider as the tenant's
    settings allow (`failover.serve`), as the proxy endpoints do."""
    if call.trace is None:
        return await answer()
    return await failover.serve(call, answer)


@dataclass(slots=True)
class Accumulator:
    """IR stream events → the answer they add up to."""

    id: str = ""
    model: str = ""
    stop_reason: ir.StopReason = "end_turn"
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    _parts: dict[int, ir.Part] = field(default_factory=dict)

    def feed(self, event: ir.StreamEvent) -> None:
        if isinstance(event, ir.MessageStart):
            self.id, self.model = event.id, event.model
        elif isinstance(event, ir.BlockStart):
            self._parts[event.index] = (
                ir.Text("")
                if event.kind == "text"
                else ir.Thinking("")
                if event.kind == "thinking"
                else ir.ToolCall(event.id, event.name, "", event.signature)
            )
        elif isinstance(event, ir.TextDelta | ir.ThinkingDelta | ir.ToolArgsDelta):
            self._delta(event)
        elif isinstance(event, ir.MessageEnd):
            self.stop_reason, self.stop_sequence = event.stop_reason, event.stop_sequence
            self.usage = event.usage

    def _delta(self, event: ir.TextDelta | ir.ThinkingDelta | ir.ToolArgsDelta) -> None:
        part = self._parts.get(event.index)
        if isinstance(event, ir.TextDelta) and isinstance(part, ir.Text):
            part.text += event.text
        elif isinstance(event, ir.ThinkingDelta) and isinstance(part, ir.Thinking):
            part.text += event.text
            if event.signature:
                part.signature = (part.signature or "") + event.signature
        elif isinstance(event, ir.ToolArgsDelta) and isinstance(part, ir.ToolCall):
            part.arguments += event.arguments

    def response(self) -> ir.ChatResponse:
        parts = [self._parts[i] for i in sorted(self._parts)]
        return ir.ChatResponse(
            self.id, self.model, parts, self.stop_reason, self.usage, self.stop_sequence
        )


@dataclass(slots=True)
class StreamResult:
    """Filled in when `stream` ends: the whole answer and its cost."""

    completion: Completion | None = None


async def stream(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: str,
    request: ir.ChatRequest,
    result: StreamResult,
) -> AsyncIterator[ir.StreamEvent]:
    """One streaming model call, as IR events. The call is metered before the last event is
    yielded (or when the consumer stops early: what was produced is billed). A failure after
    the first event ends the stream with an `ir.StreamError`; before it, it raises."""
    call = await _start(gateway, principal, request_id, endpoint, request)

    async def opening() -> UpstreamStream:  # failing over stops at the first event
        async with call.failures_recorded():
            upstream = translated.upstream_request(call, copy.copy(request), stream=True)
            return await call.provider.open_stream(upstream)

    opened = await _served(call, opening)
    decoder = translated.DECODERS[call.provider.dialect]()
    accumulator = Accumulator()
    relay = translated.relay_events(call, opened, decoder, translated.Items(), request)
    async with contextlib.aclosing(relay) as pieces:
        async for piece in pieces:
            for event in piece:
                accumulator.feed(event)
                if isinstance(event, ir.MessageEnd):  # metered before the relay gave it
                    response = accumulator.response()
                    result.completion = Completion(
                        response, call.cost_micros, call.provider.name, call.model
                    )
                yield event
