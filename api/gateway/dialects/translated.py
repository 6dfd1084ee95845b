"""The relay between a client family and a provider of another wire format (SPEC §5.2).

The client's body is parsed into the IR (`api.gateway.translate`), rendered for the provider's
dialect (Chat Completions for OpenAI, DeepSeek and the mock; Anthropic Messages; Gemini), and
the answer is parsed back and rendered in the client's family. Streams go event by event:
upstream SSE → `StreamDecoder` → IR events → the client family's `StreamEncoder`.

Metering uses the IR's normalised usage (input ⊇ cache reads and writes, output ⊇ reasoning),
so Anthropic's and Gemini's accounting is billed like everyone else's. A stream's final event
(`[DONE]`, `message_stop`, `response.completed`) is held until `Call.finish` has made the usage
event durable; a stream that breaks off ends with an error in the client's family and is
metered for what was produced (`relay_events`, shared with the same-family Anthropic relay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
from fastapi.responses import Response

from api.errors import (
    AppError,
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api.gateway import usage as usage_rules
from api.gateway.pipeline import Call
from api.gateway.pricing import Usage
from api.gateway.providers.base import UpstreamRequest, UpstreamStream, done_with
from api.gateway.relay import EventStream, JSONBody
from api.gateway.sse import SSEEvent
from api.gateway.tokens import count_text
from api.gateway.translate import (
    anthropic,
    anthropic_stream,
    gemini,
    gemini_stream,
    ir,
    openai_chat,
    openai_chat_stream,
    responses,
    responses_stream,
)
from api.gateway.translate.fields import upstream_body

logger = logging.getLogger("tollgate.gateway")

# Every provider dialect an endpoint reaches through this module (`ProviderRegistry.get`).
DIALECTS = ("openai", "anthropic", "gemini")
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"


class Encoder(Protocol):
    def feed(self, event: ir.StreamEvent) -> bytes: ...


class Decoder(Protocol):
    usage: Usage

    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]: ...

    def close(self) -> list[ir.StreamEvent]: ...


@dataclass(frozen=True, slots=True)
class Family:
    """A client API family: how its requests are read and its answers written."""

    name: str
    parse_request: Callable[[dict[str, Any]], ir.ChatRequest]
    render_response: Callable[[ir.ChatResponse], dict[str, Any]]
    encoder: Callable[[dict[str, Any], int], Encoder]  # (client body, created) → encoder
    error_tail: bytes = b""  # what follows an error event (chat: `[DONE]`)
    # (answer, client body) → the answer, for a family whose answers repeat the request (a
    # Responses object echoes its parameters); used instead of `render_response` when set.
    render_echoing: Callable[[ir.ChatResponse, dict[str, Any]], dict[str, Any]] | None = None


def _now() -> int:
    return int(time.time())


def _chat_encoder(body: dict[str, Any], created: int) -> Encoder:
    options = body.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    return openai_chat_stream.StreamEncoder(include_usage=wants_usage, created=created)


CHAT = Family(
    "openai_chat",
    openai_chat.parse_request,
    openai_chat.render_response,
    _chat_encoder,
    error_tail=_DONE,
)
MESSAGES = Family(
    "anthropic",
    anthropic.parse_request,
    anthropic.render_response,
    lambda _body, _created: anthropic_stream.StreamEncoder(),
)
RESPONSES = Family(
    "responses",
    responses.parse_request,
    responses.render_response,
    lambda body, created: responses_stream.StreamEncoder(created=created, request=body, clock=_now),
    render_echoing=lambda answer, body: responses.render_response(
        answer, body, completed_at=_now()
    ),
)

PARSERS: dict[str, Callable[[dict[str, Any]], ir.ChatResponse]] = {
    "openai": openai_chat.parse_response,
    "anthropic": anthropic.parse_response,
    "gemini": gemini.parse_response,
}


def reported_usage(dialect: str, raw: dict[str, Any]) -> Usage:
    """The usage block of an answer whose content could not be read, in any dialect."""
    if dialect == "anthropic":
        return anthropic.usage_from(raw.get("usage"))
    if dialect == "gemini":
        return gemini.usage_from(raw.get("usageMetadata"))
    reported = raw.get("usage")
    return usage_rules.from_openai(reported) if isinstance(reported, dict) else Usage()


DECODERS: dict[str, Callable[[], Decoder]] = {
    "openai": openai_chat_stream.StreamDecoder,
    "anthropic": anthropic_stream.StreamDecoder,
    "gemini": gemini_stream.StreamDecoder,
}
# Upstream OpenAI-compatible hosts that read `max_tokens` rather than `max_completion_tokens`.
_MAX_TOKENS_HOSTS = {"deepseek"}


def output_cap(call: Call) -> int:
    """The output tokens the reservation holds: the client's cap, the clamped one, or the
    model's maximum (what a provider that requires a cap is sent when the client gave none)."""
    reservation = call.reservation
    if reservation is not None and reservation.max_output_tokens > 0:
        return reservation.max_output_tokens
    return call.route.entry.max_output_tokens


def upstream_request(call: Call, request: ir.ChatRequest, *, stream: bool) -> UpstreamRequest:
    """The IR rendered in the provider's dialect, with the gateway's model name and cap."""
    request.model = call.route.upstream_model
    request.stream = stream
    # Clients size their cap for the model family they speak (Claude Code asks for 32000): no
    # more than this model produces, and no more than was reserved.
    cap = call.route.entry.max_output_tokens
    if request.max_output_tokens is not None:
        request.max_output_tokens = min(request.max_output_tokens, cap)
    reservation = call.reservation
    if reservation is not None and reservation.clamped:
        request.max_output_tokens = reservation.max_output_tokens
    dialect = call.provider.dialect
    if dialect == "anthropic":
        body = anthropic.render_request(request, default_max_tokens=output_cap(call))
        return UpstreamRequest(path="/v1/messages", body=body, stream=stream)
    if dialect == "gemini":
        path = gemini.request_path(request.model, stream=stream)
        return UpstreamRequest(path=path, body=gemini.render_request(request), stream=stream)
    field = "max_tokens" if call.provider.name in _MAX_TOKENS_HOSTS else "max_completion_tokens"
    body = openai_chat.render_request(request, max_tokens_field=field)
    return UpstreamRequest(path="/chat/completions", body=body, stream=stream)


def estimable_request(
    parse: Callable[[dict[str, Any]], ir.ChatRequest],
    body: dict[str, Any],
    model: str,
    fields: tuple[str, ...],
) -> ir.ChatRequest:
    """A same-family body in the IR, only to estimate a prompt the upstream did not count; a
    body the translator does not know (the upstream accepted it) is estimated from the JSON
    of its `fields`."""
    try:
        return parse(body)
    except AppError:
        return unread_request(model, *(body.get(name) for name in fields))


def unread_request(model: str, *parts: Any) -> ir.ChatRequest:
    """For estimating the prompt of a body the translator cannot read (the upstream accepted
    it): its parts as JSON text in one user turn, counted like any other prompt."""
    said = orjson.dumps([part for part in parts if part is not None]).decode()
    return ir.ChatRequest(model=model, messages=[ir.Message("user", [ir.Text(said)])])


def prompt_estimate(request: ir.ChatRequest) -> int:
    """The prompt's size counted as OpenAI would (an estimate for other tokenizers)."""
    try:
        chat = openai_chat.render_request(request)
    except AppError:
        return 0
    return usage_rules.prompt_tokens(chat)


def estimated_usage(reported: Usage, request: ir.ChatRequest, produced: list[str]) -> Usage:
    """What a stream cut off (or an answer without usage) consumed: the provider's counts so far
    where it sent them, else the prompt and the output relayed, counted."""
    output = max(reported.output_tokens, count_text("".join(produced)))
    return Usage(
        input_tokens=reported.input_tokens or prompt_estimate(request),
        cached_input_tokens=reported.cached_input_tokens,
        output_tokens=output,
        reasoning_tokens=reported.reasoning_tokens,
        estimated=True,
        cache_write_input_tokens=reported.cache_write_input_tokens,
        media_input_tokens=reported.media_input_tokens,
        media_output_tokens=min(reported.media_output_tokens, output),
    )


def _produced(event: ir.StreamEvent) -> str:
    if isinstance(event, ir.TextDelta | ir.ThinkingDelta):
        return event.text
    if isinstance(event, ir.ToolArgsDelta):
        return event.arguments
    if isinstance(event, ir.BlockStart):
        return event.name
    return ""


def response_text(response: ir.ChatResponse) -> list[str]:
    out: list[str] = []
    for part in response.parts:
        if isinstance(part, ir.Text | ir.Thinking):
            out.append(part.text)
        elif isinstance(part, ir.ToolCall):
            out += [part.name, part.arguments]
    return out


def stream_failure(error: ir.StreamError) -> AppError:
    """An error event from upstream, as the error it is metered with."""
    message = error.message or None
    if error.kind == "overloaded":
        return UpstreamUnavailable(message)
    if error.kind == "rate_limit":
        return RateLimited(message)
    if error.kind == "timeout":
        return UpstreamTimeout(message)
    if error.kind == "invalid_request":
        return UpstreamClientError(message, status=400)
    return UpstreamError(message)


def json_answer(raw: bytes, provider: str) -> dict[str, Any]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise UpstreamError(f"The {provider} provider answered with something other than JSON.")
    return payload


# Requests ---------------------------------------------------------------------------------


async def respond(
    call: Call,
    family: Family,
    body: dict[str, Any],
    *,
    stream: bool,
    repeat: Mapping[str, Any] | None = None,
) -> Response:
    """Answer `body` (in `family`'s shape) from `call.provider`, whatever its dialect.
    `repeat`: what an answer that repeats its request (a Responses object) repeats beside the
    body: what the gateway resolved out of it (a stored response's `previous_response_id`)."""
    shown = {**body, **repeat} if repeat else body
    async with call.failures_recorded():
        translating = time.perf_counter_ns()
        request = family.parse_request(body)
        upstream = upstream_request(call, request, stream=stream)
        call.step("translate", translating)
        if stream:
            opened = await call.provider.open_stream(upstream)
            call.warn(request.warnings)
            headers = call.response_headers
            decoder = DECODERS[call.provider.dialect]()
            output = Translating(family.encoder(shown, int(time.time())), family.error_tail)
            events = relay_events(call, opened, decoder, output, request)
            return EventStream(events, headers)
        answer = await call.provider.send(upstream)
        raw = json_answer(answer.body, call.provider.name)
        try:
            parsed = upstream_body(PARSERS[call.provider.dialect], raw, call.provider.name)
        except AppError as error:  # an answer we cannot read was still billed upstream
            usage = reported_usage(call.provider.dialect, raw)
            await call.finish(usage, status=error.status_code, error=error)
            raise
        usage = parsed.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:  # a host that reports none
            usage = estimated_usage(usage, request, response_text(parsed))
        await call.finish(usage)
    call.warn(request.warnings)
    headers = call.response_headers
    parsed.created = parsed.created or int(time.time())
    echoing = family.render_echoing
    payload = echoing(parsed, shown) if echoing is not None else family.render_response(parsed)
    payload["provider"] = call.provider.name
    return JSONBody(orjson.dumps(payload), headers)


# Streams ----------------------------------------------------------------------------------

Terminal = ir.MessageEnd | ir.StreamError
P = TypeVar("P")  # what a relay produces for its reader: bytes, or IR events


class Output(Protocol[P]):
    """How a relayed stream is written for its reader: bytes for a client, IR events for a
    thread turn. `event` is the upstream event the IR events came from (None for what the
    gateway adds); `items` precede any terminal event. An empty piece is falsy."""

    def content(self, event: SSEEvent | None, items: Sequence[ir.StreamEvent]) -> P: ...

    def end(self, event: SSEEvent | None, items: Sequence[ir.StreamEvent], terminal: Terminal) -> P:
        """The final piece (held until the call is metered): an end or an error."""
        ...

    def join(self, pieces: list[P]) -> P:
        """Pieces that arrived in one read, as one."""
        ...


class ToClient:
    """An `Output` of bytes for a client: the events of one read go out in one send."""

    @staticmethod
    def join(pieces: list[bytes]) -> bytes:
        return b"".join(pieces)


class Translating(ToClient):
    """IR events through the client family's encoder."""

    def __init__(self, encoder: Encoder, error_tail: bytes) -> None:
        self._encoder = encoder
        self._tail = error_tail

    def content(self, _event: SSEEvent | None, items: Sequence[ir.StreamEvent]) -> bytes:
        return b"".join(self._encoder.feed(item) for item in items)

    def end(
        self, _event: SSEEvent | None, items: Sequence[ir.StreamEvent], terminal: Terminal
    ) -> bytes:
        out = b"".join(self._encoder.feed(item) for item in items) + self._encoder.feed(terminal)
        return out + self._tail if isinstance(terminal, ir.StreamError) else out


class Items:
    """IR events for a reader that takes them as such (a thread turn): each piece is what
    came before the end, then the end (`ir.MessageEnd` or `ir.StreamError`)."""

    def content(self, _event: SSEEvent | None, items: Sequence[ir.StreamEvent]) -> list[Any]:
        return list(items)

    def end(
        self, _event: SSEEvent | None, items: Sequence[ir.StreamEvent], terminal: Terminal
    ) -> list[Any]:
        return [*items, terminal]

    @staticmethod
    def join(pieces: list[list[Any]]) -> list[Any]:
        return [item for piece in pieces for item in piece]


class _Relay(Generic[P]):
    """One stream's state: what was produced (for estimates), and how it ended."""

    def __init__(
        self,
        call: Call,
        decoder: Decoder,
        output: Output[P],
        request: Prompt,
        passed: Passed | None = None,
    ) -> None:
        self.call = call
        self.decoder = decoder
        self.output = output
        self._request = request
        self.passed = passed
        # Text produced, for estimates; raw data of events passed through, decoded if needed.
        self.produced: list[str | bytes] = []
        self.terminal: Terminal | None = None
        self.event: SSEEvent | None = None  # the upstream event that carried the terminal
        self.before: list[ir.StreamEvent] = []  # its IR events ahead of the terminal
        self.first = True

    @property
    def request(self) -> ir.ChatRequest:
        """The request in the IR, for estimating a prompt the upstream did not count (built
        only then: most streams report their usage)."""
        if callable(self._request):
            self._request = self._request()
        return self._request

    def feed(self, event: SSEEvent) -> P:
        if self.first:
            self.first = False
            call = self.call
            elapsed = time.perf_counter() - call.started
            call.gateway.metrics.ttfb.labels(call.endpoint, call.provider.name).observe(elapsed)
        passed = self.passed
        if (
            passed is not None
            and event.event == passed.event
            and not (passed.unless and any(mark in event.data for mark in passed.unless))
        ):
            self.produced.append(event.data)
            return self.output.content(event, ())
        return self._take(event, self.decoder.feed(event))

    def close(self) -> P:
        """The body ended: a decoder may owe its end (Gemini streams have no end marker)."""
        return self._take(None, self.decoder.close())

    def _take(self, event: SSEEvent | None, items: list[ir.StreamEvent]) -> P:
        before: list[ir.StreamEvent] = []
        for item in items:
            if isinstance(item, ir.MessageEnd | ir.StreamError):
                self.terminal, self.event, self.before = item, event, before
                return self.output.content(None, ())  # nothing: the end goes out after metering
            if isinstance(item, ir.BlockStart) and item.kind not in ("text", "thinking"):
                self.call.tool_calls += 1  # for the request log
            self.produced.append(_produced(item))
            before.append(item)
        return self.output.content(event, before)

    def usage_so_far(self) -> Usage:
        return estimated_usage(self.decoder.usage, self.request, self._texts())

    def _texts(self) -> list[str]:
        passed = self.passed
        return [
            item if isinstance(item, str) else passed.text(item) if passed is not None else ""
            for item in self.produced
        ]

    async def finish(self, failure: AppError | None) -> P:
        """Meter the call, then return the final bytes."""
        terminal = self.terminal
        if failure is None and terminal is None:
            provider = self.call.provider.name
            failure = UpstreamError(f"The {provider} stream ended before it was complete.")
        if failure is not None:
            terminal, self.event, self.before = ir.StreamError.from_app_error(failure), None, []
        assert terminal is not None
        if isinstance(terminal, ir.MessageEnd):
            usage = terminal.usage
            if usage.input_tokens == 0 and usage.output_tokens == 0:  # a host that reports none
                usage = estimated_usage(usage, self.request, self._texts())
                terminal = ir.MessageEnd(terminal.stop_reason, usage, terminal.stop_sequence)
            await self.call.finish(usage)
        else:
            error = failure or stream_failure(terminal)
            await self.call.finish(self.usage_so_far(), status=error.status_code, error=error)
        return self.output.end(self.event, self.before, terminal)


class DecodedUsage:
    """A stream's final usage, read through its dialect's decoder (which has seen the events
    relayed so far: Anthropic's input count comes first, its output count last)."""

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder

    def feed(self, event: SSEEvent) -> Usage | None:
        return self._final(self._decoder.feed(event))

    def end(self) -> Usage | None:
        return self._final(self._decoder.close())

    @staticmethod
    def _final(items: list[ir.StreamEvent]) -> Usage | None:
        for item in items:
            if isinstance(item, ir.MessageEnd):
                return item.usage
            if isinstance(item, ir.StreamError):  # what it billed is not known
                raise UpstreamError(item.message or "The stream failed.")
        return None


@dataclass(frozen=True, slots=True)
class Passed:
    """Upstream events of one type relayed as they are, never decoded unless a cut-off stream
    must be estimated: the many small deltas of a stream relayed in its own format, whose
    decoding was most of the relay's cost. `text`: the text one event's data produced.
    `unless`: marks in an event's data that have it decoded after all (a chat stream's events
    are all of one type; its usage chunk, `[DONE]` and error chunk carry its end)."""

    event: bytes | None
    text: Callable[[bytes], str]
    unless: tuple[bytes, ...] = ()


# The request in the IR, or how to build it when a prompt must be estimated.
Prompt = ir.ChatRequest | Callable[[], ir.ChatRequest]


async def relay_events(
    call: Call,
    stream: UpstreamStream,
    decoder: Decoder,
    output: Output[P],
    request: Prompt,
    passed: Passed | None = None,
) -> AsyncGenerator[P, None]:
    """Relay one upstream stream to its reader, every stream the gateway relays, to a client
    or a thread turn: whatever ends it (its end, an upstream cut, the reader gone, a
    cancellation) is metered, before the final piece."""
    relay = _Relay(call, decoder, output, request, passed)
    failure: AppError | None = None  # what broke the stream on our side of it
    chunks: list[P] = []  # of the events that arrived with the one being read
    first_out = True
    try:
        async for event in stream.events():
            chunk = relay.feed(event)
            if chunk:
                chunks.append(chunk)
            if relay.terminal is not None:
                break
            if chunks and (not event.more or first_out):  # the first event goes out alone
                if first_out:
                    first_out = False
                    if call.timing is not None:
                        call.timing.mark("first_byte")
                yield output.join(chunks)
                chunks.clear()
        else:
            chunk = relay.close()
            if chunk:
                chunks.append(chunk)
    except (asyncio.CancelledError, GeneratorExit):
        # The client went away: read on for the usage upstream bills (`Call.abandon`).
        call.abandon(stream, DecodedUsage(decoder), relay.usage_so_far())
        raise
    except Exception as exc:
        failure = exc if isinstance(exc, AppError) else UpstreamError("The stream failed.")
        if not isinstance(exc, AppError):
            logger.exception("relaying a %s stream failed", call.provider.name)
    done_with(stream, failure)
    # What came with the final event (or before the failure) goes out with the end, after the
    # call is metered: a client that leaves now cannot cut the metering short.
    chunks.append(await relay.finish(failure))
    yield output.join(chunks)
