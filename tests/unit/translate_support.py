"""Shared helpers for the translator tests: fixture loading, SSE replay, SDK-side decoding."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import anthropic
from anthropic.lib.streaming._messages import accumulate_event
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from api.gateway.sse import SSEEvent, parse_sse
from api.gateway.translate import ir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"


def load(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_bytes())


def events_of(raw: bytes, piece: int = 7) -> list[SSEEvent]:
    """Parse an SSE body with the gateway's parser, fed in small pieces as a network would."""

    async def chunks():
        for start in range(0, len(raw), piece):
            yield raw[start : start + piece]

    async def collect() -> list[SSEEvent]:
        return [event async for event in parse_sse(chunks())]

    # Nothing here ever suspends, so one step runs it to the end, inside a running loop or not.
    step = collect()
    try:
        step.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    step.close()
    raise AssertionError("the SSE parser suspended")


def replay(path: str) -> list[SSEEvent]:
    return events_of((FIXTURES / path).read_bytes())


class Decoder(Protocol):
    def feed(self, event: SSEEvent) -> list[ir.StreamEvent]: ...

    def close(self) -> list[ir.StreamEvent]: ...


class Encoder(Protocol):
    def feed(self, event: ir.StreamEvent) -> bytes: ...


def decode(decoder: Decoder, events: Iterable[SSEEvent]) -> list[ir.StreamEvent]:
    out = [item for event in events for item in decoder.feed(event)]
    return out + decoder.close()


def encode(encoder: Encoder, events: Iterable[ir.StreamEvent]) -> bytes:
    return b"".join(encoder.feed(event) for event in events)


def data_of(body: bytes) -> list[Any]:
    """The JSON payloads of an encoded stream ([DONE] as the string "[DONE]")."""
    out: list[Any] = []
    for event in events_of(body):
        out.append("[DONE]" if event.data == b"[DONE]" else json.loads(event.data))
    return out


def chat_final(body: bytes) -> ChatCompletion:
    """What the OpenAI SDK's own stream accumulator makes of an encoded chat stream."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for payload in data_of(body):
        if payload != "[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate(payload))
    return state.get_final_completion()


_ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def anthropic_final(body: bytes) -> anthropic.types.Message:
    """What the Anthropic SDK's own stream accumulator makes of an encoded Messages stream."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events_of(body):
        payload = json.loads(event.data)
        assert event.event is not None
        assert event.event.decode() == payload["type"]
        if payload["type"] == "ping":
            continue
        parsed = _ANTHROPIC_EVENT.validate_python(payload)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return snapshot
