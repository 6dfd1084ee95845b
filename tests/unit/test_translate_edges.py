"""Edges of translation that real clients reach: forced tool calls, refusals, odd input,
caps sized for another model, thinking inside a lowered cap, tool results leading a turn."""

from __future__ import annotations

import math
from decimal import Decimal

import orjson
import pytest

from api.errors import InvalidRequest
from api.gateway.catalog import Catalog
from api.gateway.pricing import Usage, cost_micros
from api.gateway.sse import SSEEvent
from api.gateway.translate import (
    anthropic,
    gemini,
    ir,
    openai_chat,
    openai_chat_stream,
    responses,
)


def _chunk(delta: dict[str, object], finish: str | None = None) -> SSEEvent:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return SSEEvent(orjson.dumps({"id": "c", "model": "gpt-4o", "choices": [choice]}))


class TestForcedToolCalls:
    """OpenAI ends a call forced by a named `tool_choice` with `finish_reason: "stop"`."""

    def test_a_plain_answer_that_calls_a_tool_stopped_to_use_it(self):
        body = {
            "id": "x", "model": "gpt-4o", "created": 1,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"}}]}}],
        }  # fmt: skip
        assert openai_chat.parse_response(body).stop_reason == "tool_use"
        assert anthropic.render_response(openai_chat.parse_response(body))["stop_reason"] == (
            "tool_use"
        )

    def test_a_streamed_one_too(self):
        decoder = openai_chat_stream.StreamDecoder()
        call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
        events = decoder.feed(_chunk({"role": "assistant", "tool_calls": [call]}))
        events += decoder.feed(_chunk({}, finish="stop"))
        events += decoder.feed(SSEEvent(b"[DONE]"))
        end = events[-1]
        assert isinstance(end, ir.MessageEnd)
        assert end.stop_reason == "tool_use"

    def test_text_that_stops_is_still_end_turn(self):
        decoder = openai_chat_stream.StreamDecoder()
        events = decoder.feed(_chunk({"content": "hi"}, finish="stop"))
        events += decoder.feed(SSEEvent(b"[DONE]"))
        assert isinstance(events[-1], ir.MessageEnd)
        assert events[-1].stop_reason == "end_turn"


def test_a_streamed_refusal_is_relayed_as_text():
    decoder = openai_chat_stream.StreamDecoder()
    events = decoder.feed(_chunk({"refusal": "I can't help with that."}))
    said = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    assert said == "I can't help with that."


@pytest.mark.parametrize(
    ("parse", "body", "param"),
    [
        (anthropic.parse_request,
         {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
          "tool_choice": {"type": []}}, "tool_choice.type"),
        (responses.parse_request,
         {"model": "m", "input": [{"type": "reasoning", "summary": 5}]}, "input[0].summary"),
        (responses.parse_request,
         {"model": "m", "input": [{"type": "reasoning", "content": 5}]}, "input[0].content"),
    ],
)  # fmt: skip
def test_malformed_fields_are_400s_naming_them(parse, body, param):
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.param == param


class TestAnthropicRendering:
    def test_tool_results_lead_their_merged_user_turn(self):
        request = openai_chat.parse_request({
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "user", "content": "and quickly"},
                {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
            ],
        })  # fmt: skip
        last = anthropic.render_request(request)["messages"][-1]
        assert last["role"] == "user"
        assert [block["type"] for block in last["content"]] == ["tool_result", "text"]

    def test_thinking_fits_inside_a_lowered_cap(self):
        request = anthropic.parse_request({
            "model": "m", "max_tokens": 8000, "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "enabled", "budget_tokens": 6000},
        })  # fmt: skip
        request.max_output_tokens = 3000  # what the remaining budget affords
        body = anthropic.render_request(request)
        assert body["max_tokens"] == 3000
        assert body["thinking"]["budget_tokens"] == 2999
        request.max_output_tokens = 500  # no room left for Anthropic's minimum thinking budget
        body = anthropic.render_request(request)
        assert body["max_tokens"] == 500
        assert "thinking" not in body
        assert any("thinking dropped" in w for w in request.warnings)


class TestStructuredOutput:
    SCHEMA = {  # noqa: RUF012 - read only
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }

    def test_responses_text_format_reaches_a_chat_upstream(self):
        request = responses.parse_request({
            "model": "gpt-4o", "input": "Where?",
            "text": {"format": {"type": "json_schema", "name": "place", "schema": self.SCHEMA,
                                "strict": True}},
        })  # fmt: skip
        body = openai_chat.render_request(request)
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": self.SCHEMA, "strict": True},
        }
        assert request.warnings == []

    def test_chat_response_format_becomes_gemini_json_mode(self):
        request = openai_chat.parse_request({
            "model": "m", "messages": [{"role": "user", "content": "Where?"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "place", "schema": self.SCHEMA}},
        })  # fmt: skip
        config = gemini.render_request(request)["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"] == {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        }  # fmt: skip
        plain = openai_chat.parse_request({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        })  # fmt: skip
        assert "responseSchema" not in gemini.render_request(plain)["generationConfig"]

    def test_claude_has_no_json_mode_and_says_so(self):
        request = openai_chat.parse_request({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        })  # fmt: skip
        anthropic.render_request(request)
        assert any("structured output dropped" in w for w in request.warnings)

    @pytest.mark.parametrize(
        ("parse", "body", "param"),
        [
            (openai_chat.parse_request,
             {"model": "m", "messages": [{"role": "user", "content": "x"}],
              "response_format": {"type": "yaml"}}, "response_format.type"),
            (responses.parse_request,
             {"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}},
             "text.format.name"),
        ],
    )  # fmt: skip
    def test_bad_formats_are_400s(self, parse, body, param):
        with pytest.raises(InvalidRequest) as caught:
            parse(body)
        assert caught.value.param == param


class TestAnthropicExtras:
    """What Anthropic bills beyond tokens: 1-hour cache writes (2x input) and web searches."""

    def test_one_hour_cache_writes_and_web_searches_are_billed(self):
        raw = {
            "input_tokens": 100, "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000,
            },
            "output_tokens": 50, "server_tool_use": {"web_search_requests": 3},
        }  # fmt: skip
        usage = anthropic.usage_from(raw)
        assert (usage.input_tokens, usage.cache_write_1h_input_tokens) == (4100, 2000)
        assert usage.web_search_requests == 3
        sonnet = Catalog.build().resolve("claude-sonnet-4").entry.price
        # $3 input, $0.30 read, $3.75 5-minute write, $6 1-hour write, $15 output per million
        # tokens, $10 per 1,000 searches; written out independently of pricing.py.
        expected_usd = (
            Decimal(100) * 3 + Decimal(1000) * Decimal("0.30") + Decimal(1000) * Decimal("3.75")
            + Decimal(2000) * 6 + Decimal(50) * 15
        ) / 10**6 + Decimal(3) * Decimal("0.01")  # fmt: skip
        assert cost_micros(usage, sonnet) == math.ceil(expected_usd * 10**6)
        assert anthropic.usage_from(anthropic.render_usage(usage)) == usage

    def test_other_providers_charge_nothing_per_search(self):
        gpt = Catalog.build().resolve("gpt-4o").entry.price
        assert gpt.web_search == 0
        assert cost_micros(Usage(web_search_requests=5), gpt) == 0
