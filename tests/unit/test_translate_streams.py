"""Streams: every SSE fixture decoded into IR events, and re-encoded for each client family,
checked with the official SDKs' own stream accumulators."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from api.errors import UpstreamError, UpstreamUnavailable
from api.gateway.pricing import Usage
from api.gateway.sse import SSEEvent
from api.gateway.translate import (
    anthropic_stream,
    gemini_stream,
    ir,
    openai_chat_stream,
    responses_stream,
)
from tests.unit.translate_support import (
    anthropic_final,
    chat_final,
    data_of,
    decode,
    encode,
    events_of,
    replay,
)

_RESPONSES_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def texts(events: list[ir.StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ir.TextDelta))


def tool_calls(events: list[ir.StreamEvent]) -> list[tuple[str, str, dict[str, Any]]]:
    starts = {e.index: e for e in events if isinstance(e, ir.BlockStart) and e.kind == "tool_call"}
    args = {i: "".join(e.arguments for e in events if isinstance(e, ir.ToolArgsDelta)
                       and e.index == i) for i in starts}  # fmt: skip
    return [(s.id, s.name, json.loads(args[i])) for i, s in starts.items()]


def responses_final(body: bytes) -> dict[str, Any]:
    """Every event validates against the SDK's union; sequence numbers count up from 0."""
    payloads = data_of(body)
    for number, payload in enumerate(payloads):
        _RESPONSES_EVENT.validate_python(payload)
        assert payload["sequence_number"] == number
    assert payloads[-1]["type"] in ("response.completed", "response.incomplete")
    return payloads[-1]["response"]  # type: ignore[no-any-return]


class TestAnthropicStreams:
    def test_text_then_tool_use(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/03_stream_text_then_tool_use.sse")
        )
        start = events[0]
        assert isinstance(start, ir.MessageStart)
        assert start.usage == Usage(2219, 0, 1, cache_write_input_tokens=2188)
        assert texts(events) == "I'll check the current weather in Paris for you."
        assert tool_calls(events) == [
            ("toolu_01Dq8fXw3ZkR5mNp2VtYbL7c", "get_weather",
             {"location": "Paris, France", "unit": "celsius"}),
        ]  # fmt: skip
        assert events[-1] == ir.MessageEnd(
            "tool_use", Usage(2219, 0, 74, cache_write_input_tokens=2188)
        )
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("BlockStart") == kinds.count("BlockStop") == 2

    def test_re_encoded_as_chat_chunks(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/03_stream_text_then_tool_use.sse")
        )
        body = encode(openai_chat_stream.StreamEncoder(), events)
        assert body.endswith(b"data: [DONE]\n\n")
        final = chat_final(body)
        choice = final.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "I'll check the current weather in Paris for you."
        assert choice.message.tool_calls is not None
        [call] = choice.message.tool_calls
        assert (call.id, call.function.name) == ("toolu_01Dq8fXw3ZkR5mNp2VtYbL7c", "get_weather")  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {  # type: ignore[union-attr]
            "location": "Paris, France", "unit": "celsius",
        }  # fmt: skip
        usage = data_of(body)[-2]["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (2219, 74)
        assert usage["prompt_tokens_details"]["cache_write_tokens"] == 2188
        # Without include_usage there is no usage chunk.
        quiet = data_of(encode(openai_chat_stream.StreamEncoder(include_usage=False), events))
        assert all("usage" not in c for c in quiet[:-1])

    def test_re_encoded_as_responses_events(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/03_stream_text_then_tool_use.sse")
        )
        final = responses_final(encode(responses_stream.StreamEncoder(), events))
        assert final["status"] == "completed"
        assert [item["type"] for item in final["output"]] == ["message", "function_call"]
        assert final["output"][0]["content"][0]["text"] == (
            "I'll check the current weather in Paris for you."
        )
        assert json.loads(final["output"][1]["arguments"]) == {
            "location": "Paris, France", "unit": "celsius",
        }  # fmt: skip
        assert final["usage"]["input_tokens"] == 2219
        assert final["usage"]["output_tokens"] == 74

    def test_anthropic_round_trip_is_stable(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/03_stream_text_then_tool_use.sse")
        )
        body = encode(anthropic_stream.StreamEncoder(), events)
        assert decode(anthropic_stream.StreamDecoder(), events_of(body)) == events
        message = anthropic_final(body)
        assert message.stop_reason == "tool_use"
        assert message.content[1].type == "tool_use"
        assert message.content[1].input == {"location": "Paris, France", "unit": "celsius"}

    def test_thinking_with_signature(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/04_stream_thinking_then_text.sse")
        )
        thinking = "".join(e.text for e in events if isinstance(e, ir.ThinkingDelta))
        assert thinking == (
            "The user wants 27 * 453. Let me break it down:\n\n27 * 453 = 27 * 400 + 27 * 53"
            "\n= 10800 + 1431\n= 12231"
        )
        signature = "".join(e.signature for e in events if isinstance(e, ir.ThinkingDelta))
        assert signature.startswith("ErUBCkYIBRgCIkCl3pG8")
        assert texts(events) == "27 \u00d7 453 = **12,231**"
        assert events[-1] == ir.MessageEnd("end_turn", Usage(46, 0, 87))
        message = anthropic_final(encode(anthropic_stream.StreamEncoder(), events))
        assert message.content[0].type == "thinking"
        assert message.content[0].signature == signature
        chat = data_of(encode(openai_chat_stream.StreamEncoder(), events))
        reasoning = "".join(
            c["choices"][0]["delta"].get("reasoning_content", "") for c in chat if c != "[DONE]"
            and c["choices"]
        )  # fmt: skip
        assert reasoning == thinking
        final = responses_final(encode(responses_stream.StreamEncoder(), events))
        assert final["output"][0]["type"] == "reasoning"
        assert final["output"][0]["encrypted_content"] == signature
        assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": thinking}]

    def test_midstream_overloaded_error(self):
        decoder = anthropic_stream.StreamDecoder()
        events = decode(decoder, replay("anthropic/05_stream_midstream_overloaded_error.sse"))
        assert events[-1] == ir.StreamError("overloaded", "Overloaded")
        assert texts(events) == "Here is a summary of"
        assert decoder.usage == Usage(512, 0, 1)  # metered for what was produced
        chat = data_of(encode(openai_chat_stream.StreamEncoder(), events))
        assert chat[-1] == {"error": {"message": "Overloaded", "type": "server_error",
                                      "code": "overloaded", "param": None}}  # fmt: skip
        claude = encode(anthropic_stream.StreamEncoder(), events)
        assert claude.endswith(
            b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
            b'"message":"Overloaded"}}\n\n'
        )
        responses = data_of(encode(responses_stream.StreamEncoder(), events))
        error, failed = responses[-2:]
        assert (error["type"], error["code"]) == ("error", "server_error")
        assert failed["type"] == "response.failed"
        assert failed["response"]["status"] == "failed"
        assert failed["response"]["error"] == {"code": "server_error", "message": "Overloaded"}

    def test_an_error_before_anything_still_opens_the_response(self):
        """The SDK's accumulator refuses an `error` that comes before `response.created`."""
        raw = data_of(responses_stream.StreamEncoder().feed(ir.StreamError("overloaded", "busy")))
        assert [e["type"] for e in raw] == [
            "response.created", "response.in_progress", "error", "response.failed",
        ]  # fmt: skip
        state = ResponseStreamState(input_tools=[], text_format=None)
        adapter: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
        for event in raw:
            state.handle_event(adapter.validate_python(event))

    def test_error_from_the_pipeline(self):
        error = ir.StreamError.from_app_error(UpstreamUnavailable("busy"))
        assert error == ir.StreamError("overloaded", "busy")


class TestOpenAIChatStreams:
    @pytest.mark.parametrize(
        "path",
        ["openai-chat/04_stream_text_include_usage.sse",
         "openai-chat/05_stream_text_include_usage_2025_fields.sse"],
    )  # fmt: skip
    def test_text_with_usage_last(self, path: str):
        events = decode(openai_chat_stream.StreamDecoder(), replay(path))
        assert texts(events) == "Hello! How can I help you today?"
        assert events[-1] == ir.MessageEnd("end_turn", Usage(19, 0, 10))
        message = anthropic_final(encode(anthropic_stream.StreamEncoder(), events))
        assert message.content[0].type == "text"
        assert message.content[0].text == "Hello! How can I help you today?"
        assert message.stop_reason == "end_turn"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (19, 10)

    def test_parallel_tool_calls_split_args(self):
        events = decode(
            openai_chat_stream.StreamDecoder(),
            replay("openai-chat/06_stream_parallel_tool_calls_split_args.sse"),
        )
        expected = [
            ("call_Qm4sVx8PzL2dNc7RtE1yHbKa", "get_weather",
             {"city": "Lisbon", "country": "PT", "units": "c"}),
            ("call_W9fJr3UoYk6TgA0iZs5nDqXe", "get_stock_price",
             {"ticker": "MSFT", "exchange": "NASDAQ"}),
        ]  # fmt: skip
        assert tool_calls(events) == expected
        assert events[-1] == ir.MessageEnd("tool_use", Usage(149, 0, 60))
        message = anthropic_final(encode(anthropic_stream.StreamEncoder(), events))
        assert message.stop_reason == "tool_use"
        assert [(b.id, b.name, b.input) for b in message.content] == expected  # type: ignore[union-attr]
        final = responses_final(encode(responses_stream.StreamEncoder(), events))
        assert [(o["call_id"], json.loads(o["arguments"])) for o in final["output"]] == [
            (i, args) for i, _, args in expected
        ]

    def test_deepseek_reasoner(self):
        events = decode(
            openai_chat_stream.StreamDecoder(), replay("deepseek/03_stream_reasoner.sse")
        )
        thinking = "".join(e.text for e in events if isinstance(e, ir.ThinkingDelta))
        assert thinking == "Compare 9.11 and 9.8: 0.11 < 0.80."
        assert texts(events) == "9.11 is smaller than 9.8."
        assert events[-1] == ir.MessageEnd("end_turn", Usage(18, 0, 254, 213))
        message = anthropic_final(encode(anthropic_stream.StreamEncoder(), events))
        assert [b.type for b in message.content] == ["thinking", "text"]
        chat = chat_final(encode(openai_chat_stream.StreamEncoder(), events))
        assert chat.choices[0].message.content == "9.11 is smaller than 9.8."

    def test_cut_off_stream_ends_without_a_message_end(self):
        raw = replay("openai-chat/06_stream_parallel_tool_calls_split_args.sse")[:5]
        decoder = openai_chat_stream.StreamDecoder()
        events = decode(decoder, raw)
        assert not any(isinstance(e, ir.MessageEnd) for e in events)
        assert decoder.usage == Usage()  # the pipeline estimates


class TestResponsesStreams:
    def test_text(self):
        decoder = responses_stream.StreamDecoder()
        events = decode(decoder, replay("openai-responses/03_stream_text.sse"))
        assert texts(events) == "Hi there! How can I help?"
        assert events[-1] == ir.MessageEnd("end_turn", Usage(12, 0, 9))
        final = chat_final(encode(openai_chat_stream.StreamEncoder(), events))
        assert final.choices[0].message.content == "Hi there! How can I help?"
        assert final.choices[0].finish_reason == "stop"
        again = responses_final(encode(responses_stream.StreamEncoder(), events))
        assert again["output"][0]["content"][0]["text"] == "Hi there! How can I help?"

    def test_reasoning_then_two_function_calls(self):
        events = decode(
            responses_stream.StreamDecoder(),
            replay("openai-responses/04_stream_reasoning_then_two_function_calls.sse"),
        )
        assert tool_calls(events) == [
            ("call_zmgkL7rFpA4eOyUO0SamopGI", "get_weather",
             {"location": "Paris, France", "unit": "celsius"}),
            ("call_Vb3nK8sQwE2rT6yU1iO9pA4d", "get_weather",
             {"location": "London, UK", "unit": "celsius"}),
        ]  # fmt: skip
        assert events[-1] == ir.MessageEnd("tool_use", Usage(96, 0, 54))
        final = chat_final(encode(openai_chat_stream.StreamEncoder(), events))
        assert final.choices[0].finish_reason == "tool_calls"
        calls = final.choices[0].message.tool_calls or []
        assert [json.loads(c.function.arguments)["location"] for c in calls] == [  # type: ignore[union-attr]
            "Paris, France", "London, UK",
        ]  # fmt: skip


class TestGeminiStreams:
    def test_text_with_crlf_and_usage_on_every_chunk(self):
        raw = replay("gemini/06_stream_text_alt_sse.sse")
        assert len(raw) == 3  # CRLF framing parsed
        decoder = gemini_stream.StreamDecoder()
        events = decode(decoder, raw)
        assert texts(events) == (
            "The capital of France is Paris. It sits on the Seine and is known for the Eiffel "
            "Tower, the Louvre and its café culture."
        )
        assert events[-1] == ir.MessageEnd("end_turn", Usage(9, 0, 32 + 423, 423))
        message = anthropic_final(encode(anthropic_stream.StreamEncoder(), events))
        assert message.usage.output_tokens == 455
        assert message.stop_reason == "end_turn"

    def test_function_calls_arrive_whole(self):
        events = decode(
            gemini_stream.StreamDecoder(), replay("gemini/07_stream_function_calls_alt_sse.sse")
        )
        calls = tool_calls(events)
        assert calls == [
            ("call_tX7jaK4oF6zIz7IPvMT5rR5_0", "get_weather",
             {"location": "Paris, France", "unit": "celsius"}),
            ("call_tX7jaK4oF6zIz7IPvMT5rR5_1", "get_weather",
             {"location": "London, UK", "unit": "celsius"}),
        ]  # fmt: skip
        signed = [e for e in events if isinstance(e, ir.BlockStart) and e.signature]
        assert len(signed) == 1
        assert events[-1] == ir.MessageEnd("tool_use", Usage(297, 0, 42 + 111, 111))
        final = chat_final(encode(openai_chat_stream.StreamEncoder(), events))
        assert final.choices[0].finish_reason == "tool_calls"
        assert len(final.choices[0].message.tool_calls or []) == 2

    def test_stream_without_finish_reason_has_no_end(self):
        raw = replay("gemini/06_stream_text_alt_sse.sse")[:2]
        decoder = gemini_stream.StreamDecoder()
        assert not any(isinstance(e, ir.MessageEnd) for e in decode(decoder, raw))
        assert decoder.usage == Usage(9, 0, 17 + 423, 423)

    def test_error_chunk(self):
        body = b'data: {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}\n\n'
        assert decode(gemini_stream.StreamDecoder(), events_of(body)) == [
            ir.StreamError("overloaded", "busy")
        ]


@pytest.mark.parametrize(
    "decoder",
    [anthropic_stream.StreamDecoder, openai_chat_stream.StreamDecoder,
     responses_stream.StreamDecoder, gemini_stream.StreamDecoder],
)  # fmt: skip
@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_upstream_events_are_the_providers_fault(decoder: Any, data: bytes):
    with pytest.raises(UpstreamError):
        decoder().feed(SSEEvent(data))


@pytest.mark.parametrize(
    "path",
    ["anthropic/03_stream_text_then_tool_use.sse", "anthropic/04_stream_thinking_then_text.sse"],
)
def test_anthropic_deltas_passed_through_read_as_the_decoder_reads_them(path: str) -> None:
    """A native /v1/messages relay passes `content_block_delta` events on undecoded and reads
    their text only to estimate a cut-off stream: it must read what decoding would give."""
    events = replay(path)
    deltas = [event for event in events if event.event == b"content_block_delta"]
    assert deltas
    decoder = anthropic_stream.StreamDecoder()
    decoded: list[str] = []
    for event in events:
        for item in decoder.feed(event):
            if isinstance(item, ir.TextDelta | ir.ThinkingDelta):
                decoded.append(item.text)
            elif isinstance(item, ir.ToolArgsDelta):
                decoded.append(item.arguments)
    passed = [anthropic_stream.delta_text(event.data) for event in deltas]
    assert "".join(passed) == "".join(decoded)  # estimates count the text joined
    assert any(decoded)


def test_a_delta_that_cannot_be_read_reads_as_nothing() -> None:
    for data in (b"not json", b"[]", b'{"delta": 3}', b'{"delta": {"type": "other"}}'):
        assert anthropic_stream.delta_text(data) == ""


@pytest.mark.parametrize(
    "path",
    ["openai-responses/03_stream_text.sse",
     "openai-responses/04_stream_reasoning_then_two_function_calls.sse"],
)  # fmt: skip
def test_responses_text_deltas_passed_through_read_as_the_decoder_reads_them(path: str) -> None:
    """A native /v1/responses relay passes `response.output_text.delta` events on undecoded."""
    events = replay(path)
    decoder = responses_stream.StreamDecoder()
    decoded, passed = [], []
    for event in events:
        if event.event == b"response.output_text.delta":
            passed.append(responses_stream.delta_text(event.data))
        for item in decoder.feed(event):
            if isinstance(item, ir.TextDelta):
                decoded.append(item.text)
    assert "".join(passed) == "".join(decoded)
    for data in (b"not json", b"[]", b'{"delta": 3}'):
        assert responses_stream.delta_text(data) == ""


def test_an_error_after_relayed_responses_events_continues_their_response() -> None:
    """What the gateway adds to a stream relayed as it came: numbered on, in the same response,
    and read by the OpenAI SDK's stream state as the end of that response."""
    relayed = replay("openai-responses/03_stream_text.sse")[:5]  # up to the first delta
    start = responses_stream.StreamDecoder().feed(relayed[0])[0]
    assert isinstance(start, ir.MessageStart)
    encoder = responses_stream.StreamEncoder(created=1)
    encoder.relayed(start, len(relayed))
    added = encoder.feed(ir.StreamError("api_error", "The openai stream broke off."))
    raw = [json.loads(event.data) for event in relayed] + [
        json.loads(block.split(b"data: ", 1)[1]) for block in added.split(b"\n\n") if block
    ]
    assert [event["type"] for event in raw[-2:]] == ["error", "response.failed"]
    assert [event["sequence_number"] for event in raw] == list(range(7))
    assert raw[-1]["response"]["id"] == start.id
    state = ResponseStreamState(input_tools=[], text_format=None)
    for event in raw:
        state.handle_event(_RESPONSES_EVENT.validate_python(event))


def test_a_failed_response_reports_what_it_consumed() -> None:
    decoder = responses_stream.StreamDecoder()
    usage = {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
    failed = {"type": "response.failed", "sequence_number": 9, "response": {
        "id": "resp_1", "status": "failed", "usage": usage,
        "error": {"code": "server_error", "message": "It broke."}}}  # fmt: skip
    [end] = decoder.feed(SSEEvent(json.dumps(failed).encode(), b"response.failed"))
    assert end == ir.StreamError("api_error", "It broke.")
    assert (decoder.usage.input_tokens, decoder.usage.output_tokens) == (900, 12)
