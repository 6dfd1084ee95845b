"""Responses objects and events Tollgate builds itself, against the published shape: the JSON
Schema in tests/fixtures/responses_schema.json (OpenAI's reference and the Open Responses
specification), the request repeated as OpenAI repeats it, one id scheme, and the OpenAI SDK's
own stream accumulator reading every event without losing a field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from api.gateway.pricing import Usage
from api.gateway.translate import (
    anthropic_stream,
    gemini_stream,
    ir,
    openai_chat_stream,
    responses,
    responses_stream,
)
from tests.responses_shape import (
    LIFECYCLE,
    check_ids,
    check_response,
    check_stream,
    event_errors,
    kept,
    response_errors,
    sse_data,
)
from tests.unit.translate_support import Decoder, decode, load, replay

_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CREATED, DONE = 1_760_000_000, 1_760_000_007
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PLAIN = {"model": "claude-sonnet-4", "input": "Hi"}
DEFAULTS: dict[str, Any] = {
    "background": False, "completed_at": DONE, "error": None, "frequency_penalty": 0.0,
    "incomplete_details": None, "instructions": None, "max_output_tokens": None,
    "max_tool_calls": None, "parallel_tool_calls": True, "presence_penalty": 0.0,
    "previous_response_id": None, "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
    "service_tier": "default", "store": True, "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
    "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled", "user": None,
    "metadata": {},
}  # fmt: skip
ANSWER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
EVERYTHING = {
    "model": "claude-sonnet-4", "input": "Weather?", "instructions": "Be brief.",
    "max_output_tokens": 256, "max_tool_calls": 2, "parallel_tool_calls": False,
    "prompt_cache_key": "weather-v1", "reasoning": {"effort": "low", "summary": "auto"},
    "safety_identifier": "user-42", "store": False, "temperature": 0.25, "top_p": 0.5,
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER_SCHEMA},
             "verbosity": "low"},
    "tool_choice": {"type": "function", "name": "get_weather"},
    "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER},
              {"type": "function", "name": "get_time", "description": "Now", "strict": False,
               "parameters": {"type": "object", "properties": {}}},
              {"type": "web_search"}],
    "top_logprobs": 3, "truncation": "auto", "user": "u_1", "metadata": {"order": "42"},
}  # fmt: skip
EVERYTHING_ECHOED = {
    **DEFAULTS,
    "instructions": "Be brief.", "max_output_tokens": 256, "max_tool_calls": 2,
    "parallel_tool_calls": False, "prompt_cache_key": "weather-v1",
    "reasoning": {"effort": "low", "summary": "auto"}, "safety_identifier": "user-42",
    "store": False, "temperature": 0.25, "top_p": 0.5,
    "text": {"format": {"type": "json_schema", "description": None, "name": "answer",
                        "schema": ANSWER_SCHEMA, "strict": False}, "verbosity": "low"},
    "tool_choice": {"type": "function", "name": "get_weather"},
    "tools": [{"type": "function", "name": "get_weather", "description": None,
               "parameters": WEATHER, "strict": True},
              {"type": "function", "name": "get_time", "description": "Now",
               "parameters": {"type": "object", "properties": {}}, "strict": False}],
    "top_logprobs": 3, "truncation": "auto", "user": "u_1", "metadata": {"order": "42"},
}  # fmt: skip


# The fields a response repeats from its request (the same in every event of a stream).
REPEATED = [k for k in DEFAULTS if k not in ("completed_at", "error", "incomplete_details")]


def echoed(response: dict[str, Any]) -> dict[str, Any]:
    return {k: response[k] for k in DEFAULTS}


def repeated(response: dict[str, Any]) -> dict[str, Any]:
    return {k: response[k] for k in REPEATED}


def answer(*parts: ir.Part, stop: ir.StopReason = "end_turn") -> ir.ChatResponse:
    return ir.ChatResponse("msg_01upstream", "claude-sonnet-4-20250514", list(parts), stop,
                           Usage(120, 20, 30, 8), created=CREATED)  # fmt: skip


def sdk_kept(response: dict[str, Any]) -> Response:
    parsed = Response.model_validate(response)
    kept(response, parsed.to_dict())
    return parsed


class TestTheResponseObject:
    def test_defaults_where_the_request_says_nothing(self):
        rendered = responses.render_response(answer(ir.Text("Hello")), PLAIN, completed_at=DONE)
        check_response(rendered)
        check_ids(rendered)
        assert echoed(rendered) == DEFAULTS
        assert (rendered["created_at"], rendered["status"]) == (CREATED, "completed")
        assert rendered["model"] == "claude-sonnet-4-20250514"
        usage = rendered["usage"]
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
            120, 30, 150,
        )  # fmt: skip
        assert sdk_kept(rendered).output_text == "Hello"

    def test_every_parameter_repeated_as_sent(self):
        rendered = responses.render_response(
            answer(ir.ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'), stop="tool_use"),
            EVERYTHING,
            completed_at=DONE,
        )
        check_response(rendered)
        assert echoed(rendered) == EVERYTHING_ECHOED  # the built-in tool was not offered
        sdk_kept(rendered)

    @pytest.mark.parametrize("given", ["conv_1", {"id": "conv_1"}])
    def test_a_conversation_is_named_as_an_object(self, given: Any):
        rendered = responses.render_response(
            answer(ir.Text("Hello")), {**PLAIN, "conversation": given}, completed_at=DONE
        )
        check_response(rendered)
        assert rendered["conversation"] == {"id": "conv_1"}
        assert sdk_kept(rendered).conversation is not None

    def test_ids_one_scheme_each_item_its_own(self):
        parts = (
            ir.Thinking("Think.", signature="sig"),
            ir.Text("Let me look."),
            ir.ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),
            ir.ToolCall("toolu_2", "get_weather", '{"city":"Rome"}'),
        )
        first = responses.render_response(answer(*parts, stop="tool_use"), PLAIN)
        again = responses.render_response(answer(*parts, stop="tool_use"), PLAIN)
        for rendered in (first, again):
            check_response(rendered)
            check_ids(rendered)
        assert [item["id"][:3] for item in first["output"]] == ["rs_", "msg", "fc_", "fc_"]
        digits = first["id"].removeprefix("resp_")
        assert all(digits in item["id"] for item in first["output"])
        assert first["id"] != again["id"]
        assert not {i["id"] for i in first["output"]} & {i["id"] for i in again["output"]}
        assert [i["call_id"] for i in first["output"][2:]] == ["toolu_1", "toolu_2"]
        assert first["output"][0]["encrypted_content"] == "sig"
        sdk_kept(first)

    @pytest.mark.parametrize(
        ("stop", "reason"),
        [("max_tokens", "max_output_tokens"), ("content_filter", "content_filter")],
    )
    def test_an_incomplete_response_has_no_completion_time(self, stop: ir.StopReason, reason: str):
        rendered = responses.render_response(
            answer(ir.Text("Cut"), stop=stop), PLAIN, completed_at=DONE
        )
        check_response(rendered)
        assert rendered["status"] == "incomplete"
        assert rendered["incomplete_details"] == {"reason": reason}
        assert rendered["completed_at"] is None
        sdk_kept(rendered)

    def test_without_the_request_it_still_has_every_field(self):
        rendered = responses.render_response(answer(ir.Text("Hello")))
        check_response(rendered)
        assert rendered["completed_at"] == CREATED  # no clock: when it was created

    def test_what_the_schema_checks(self):
        """The schema refuses what the defects were: fields missing, a wrong type, a
        completed response without its completion time."""
        rendered = responses.render_response(answer(ir.Text("Hello")), PLAIN, completed_at=DONE)
        for name in ("completed_at", "truncation", "store", "prompt_cache_key"):
            assert response_errors({k: v for k, v in rendered.items() if k != name}) == [
                f"(root): '{name}' is a required property"
            ]
        assert response_errors({**rendered, "temperature": None}) == [
            "temperature: None is not of type 'number'"
        ]
        assert response_errors({**rendered, "completed_at": None}) == [
            "completed_at: None is not of type 'integer'"
        ]


class TestThePublishedCaptures:
    """The schema against OpenAI's own answers: a 2025 capture has everything the reference
    requires today but the three fields added since."""

    ADDED_SINCE = sorted(
        f"(root): '{name}' is a required property"
        for name in ("completed_at", "frequency_penalty", "presence_penalty")
    )

    def test_the_recorded_response(self):
        recorded = load("openai-responses/02_response_nonstream_message_and_function_call.json")
        assert response_errors(recorded) == self.ADDED_SINCE

    @pytest.mark.parametrize(
        "path",
        ["openai-responses/03_stream_text.sse",
         "openai-responses/04_stream_reasoning_then_two_function_calls.sse"],
    )  # fmt: skip
    def test_the_recorded_streams(self, path: str):
        for event in (json.loads(e.data) for e in replay(path)):
            errors = event_errors(event)
            if event["type"] in LIFECYCLE:
                assert errors == [e.replace("(root)", "response") for e in self.ADDED_SINCE]
            else:
                assert errors == [], event


# Streams ----------------------------------------------------------------------------------

STREAMS: dict[str, tuple[Callable[[], Decoder], str]] = {
    "anthropic text then tool": (
        anthropic_stream.StreamDecoder, "anthropic/03_stream_text_then_tool_use.sse"),
    "anthropic thinking": (
        anthropic_stream.StreamDecoder, "anthropic/04_stream_thinking_then_text.sse"),
    "anthropic error": (
        anthropic_stream.StreamDecoder, "anthropic/05_stream_midstream_overloaded_error.sse"),
    "gemini text": (gemini_stream.StreamDecoder, "gemini/06_stream_text_alt_sse.sse"),
    "gemini calls": (gemini_stream.StreamDecoder, "gemini/07_stream_function_calls_alt_sse.sse"),
    "deepseek reasoner": (openai_chat_stream.StreamDecoder, "deepseek/03_stream_reasoner.sse"),
    "chat parallel calls": (openai_chat_stream.StreamDecoder,
                            "openai-chat/06_stream_parallel_tool_calls_split_args.sse"),
}  # fmt: skip


def encoded(events: list[ir.StreamEvent], request: dict[str, Any]) -> list[dict[str, Any]]:
    encoder = responses_stream.StreamEncoder(created=CREATED, request=request, clock=lambda: DONE)
    return sse_data(b"".join(encoder.feed(event) for event in events))


def sdk_final(events: list[dict[str, Any]]) -> Any:
    """What the OpenAI SDK's stream state makes of the events (`get_final_response`)."""
    state = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        state.handle_event(_EVENT.validate_python(event))
    return state._completed_response


class TestStreams:
    @pytest.mark.parametrize("name", list(STREAMS))
    def test_every_event_has_the_published_shape(self, name: str):
        decoder, path = STREAMS[name]
        events = encoded(decode(decoder(), replay(path)), PLAIN)
        final = check_stream(events)
        check_ids(final)
        lifecycle = [e["response"] for e in events if e["type"] in LIFECYCLE]
        assert all(repeated(r) == repeated(DEFAULTS) for r in lifecycle)
        if final["status"] == "failed":
            assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
            return
        assert final["completed_at"] == (DONE if final["status"] == "completed" else None)
        parsed = sdk_final(events)
        assert parsed is not None
        kept(final, parsed.to_dict())

    def test_the_request_is_repeated_in_every_lifecycle_event(self):
        events = encoded(
            decode(anthropic_stream.StreamDecoder(),
                   replay("anthropic/03_stream_text_then_tool_use.sse")),
            EVERYTHING,
        )  # fmt: skip
        final = check_stream(events)
        lifecycle = [e["response"] for e in events if e["type"] in LIFECYCLE]
        assert len(lifecycle) == 3
        assert all(repeated(r) == repeated(EVERYTHING_ECHOED) for r in lifecycle)
        assert final["completed_at"] == DONE
        assert final["model"] == "claude-sonnet-4-20250514"  # as the upstream named it

    def test_a_stream_cut_at_the_cap_is_incomplete(self):
        events = encoded(
            [ir.MessageStart("msg_1", "claude-sonnet-4-20250514"), ir.BlockStart(0, "text"),
             ir.TextDelta(0, "Cut"), ir.MessageEnd("max_tokens", Usage(10, 0, 4))],
            PLAIN,
        )  # fmt: skip
        final = check_stream(events)
        assert final["status"] == "incomplete"
        assert final["completed_at"] is None
        assert events[-1]["type"] == "response.incomplete"

    def test_an_error_before_anything_is_a_whole_failed_response(self):
        events = encoded([ir.StreamError("overloaded", "busy")], PLAIN)
        final = check_stream(events)
        assert [e["type"] for e in events] == [
            "response.created", "response.in_progress", "error", "response.failed",
        ]  # fmt: skip
        assert final["error"] == {"code": "server_error", "message": "busy"}
        assert final["model"] == "claude-sonnet-4"  # no upstream name yet: the one asked for

    def test_ids_are_unique_across_streams(self):
        events = decode(anthropic_stream.StreamDecoder(),
                        replay("anthropic/03_stream_text_then_tool_use.sse"))  # fmt: skip
        one, two = check_stream(encoded(events, PLAIN)), check_stream(encoded(events, PLAIN))
        assert one["id"] != two["id"]
        assert not {i["id"] for i in one["output"]} & {i["id"] for i in two["output"]}

    def test_an_error_after_relayed_events_continues_their_response(self):
        """A native stream relayed as it came keeps its own id; what the gateway adds when it
        breaks off has the published shape too."""
        relayed = replay("openai-responses/03_stream_text.sse")[:5]
        start = responses_stream.StreamDecoder().feed(relayed[0])[0]
        assert isinstance(start, ir.MessageStart)
        encoder = responses_stream.StreamEncoder(created=CREATED)
        encoder.relayed(start, len(relayed))
        added = sse_data(encoder.feed(ir.StreamError("api_error", "The stream broke off.")))
        assert [e["type"] for e in added] == ["error", "response.failed"]
        assert all(event_errors(e) == [] for e in added)
        assert added[1]["response"]["id"] == start.id
