"""Non-streaming answers: every response fixture parsed, usage normalised, and re-rendered into
each client family in a shape the official SDKs accept."""

from __future__ import annotations

import json
from dataclasses import replace

import anthropic as anthropic_sdk
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from api.errors import UpstreamError
from api.gateway.catalog import Catalog
from api.gateway.pricing import Price, Usage, cost_micros
from api.gateway.translate import anthropic, gemini, ir, openai_chat, responses
from api.gateway.translate.fields import upstream_body
from tests.unit.translate_support import load


def sdk_checks(response: ir.ChatResponse) -> tuple[ChatCompletion, anthropic_sdk.types.Message,
                                                      Response]:  # fmt: skip
    return (
        ChatCompletion.model_validate(openai_chat.render_response(response)),
        anthropic_sdk.types.Message.model_validate(anthropic.render_response(response)),
        Response.model_validate(responses.render_response(response)),
    )


class TestOpenAIChatResponses:
    def test_usage_cached_and_reasoning(self):
        response = openai_chat.parse_response(
            load("openai-chat/02_response_nonstream_usage_cached_reasoning.json")
        )
        assert response.usage == Usage(2417, 2304, 1093, 896)
        assert response.stop_reason == "end_turn"
        assert response.parts == [ir.Text(
            "The function is O(n log n): the outer loop halves `n` each pass while the inner "
            "loop scans all `n` elements."
        )]  # fmt: skip
        chat, claude, resp = sdk_checks(response)
        assert claude.usage.input_tokens == 113  # 2417 - 2304 read from cache
        assert claude.usage.cache_read_input_tokens == 2304
        assert claude.stop_reason == "end_turn"
        assert resp.usage is not None
        assert resp.usage.input_tokens_details.cached_tokens == 2304
        assert resp.usage.output_tokens_details.reasoning_tokens == 896
        assert chat.usage is not None
        assert chat.usage.total_tokens == 3510

    def test_parallel_tool_calls(self):
        response = openai_chat.parse_response(
            load("openai-chat/03_response_nonstream_parallel_tool_calls.json")
        )
        assert response.stop_reason == "tool_use"
        assert response.parts == [
            ir.ToolCall("call_Qm4sVx8PzL2dNc7RtE1yHbKa", "get_weather",
                        '{"city":"Lisbon","country":"PT","units":"c"}'),
            ir.ToolCall("call_W9fJr3UoYk6TgA0iZs5nDqXe", "get_stock_price",
                        '{"ticker":"MSFT","exchange":"NASDAQ"}'),
        ]  # fmt: skip
        _, claude, resp = sdk_checks(response)
        assert claude.stop_reason == "tool_use"
        assert [(b.type, getattr(b, "input", None)) for b in claude.content] == [
            ("tool_use", {"city": "Lisbon", "country": "PT", "units": "c"}),
            ("tool_use", {"ticker": "MSFT", "exchange": "NASDAQ"}),
        ]
        assert [(o.type, getattr(o, "call_id", None)) for o in resp.output] == [
            ("function_call", "call_Qm4sVx8PzL2dNc7RtE1yHbKa"),
            ("function_call", "call_W9fJr3UoYk6TgA0iZs5nDqXe"),
        ]
        assert resp.status == "completed"

    def test_deepseek_reasoner_and_cache_hits(self):
        reasoner = openai_chat.parse_response(load("deepseek/01_response_reasoner_nonstream.json"))
        assert reasoner.usage == Usage(18, 0, 254, 213)
        assert isinstance(reasoner.parts[0], ir.Thinking)
        assert reasoner.parts[0].text.startswith("Compare 9.11 and 9.8.")
        assert reasoner.parts[1] == ir.Text("9.11 is smaller than 9.8.")
        chat, claude, resp = sdk_checks(reasoner)
        assert [b.type for b in claude.content] == ["thinking", "text"]
        assert [o.type for o in resp.output] == ["reasoning", "message"]
        assert chat.choices[0].message.content == "9.11 is smaller than 9.8."
        hit = openai_chat.parse_response(load("deepseek/02_response_chat_cache_hit.json"))
        assert hit.usage == Usage(1854, 1792, 96, 0)


class TestAnthropicResponses:
    body = load("anthropic/02_response_nonstream_tool_use_cache_usage.json")

    def test_tool_use_and_cache_usage(self):
        response = anthropic.parse_response(self.body)
        assert response.usage == Usage(
            input_tokens=31 + 2188, cached_input_tokens=2188, output_tokens=74
        )
        assert response.stop_reason == "tool_use"
        assert response.parts == [
            ir.Text("I'll check the current weather in Paris for you."),
            ir.ToolCall("toolu_01Gs6Pn2YvK8wQe4RtZ1xMbC", "get_weather",
                        '{"location":"Paris, France","unit":"celsius"}'),
        ]  # fmt: skip
        chat, claude, resp = sdk_checks(response)
        message = chat.choices[0].message
        assert message.content == "I'll check the current weather in Paris for you."
        assert message.tool_calls is not None
        assert json.loads(message.tool_calls[0].function.arguments) == {  # type: ignore[union-attr]
            "location": "Paris, France", "unit": "celsius",
        }  # fmt: skip
        assert chat.choices[0].finish_reason == "tool_calls"
        assert chat.usage is not None
        assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (2219, 74)
        assert chat.usage.prompt_tokens_details is not None
        assert chat.usage.prompt_tokens_details.cached_tokens == 2188
        # Messages → IR → Messages gives back the same content and usage.
        assert claude.model_dump(include={"content", "stop_reason", "usage"}, exclude_none=True)[
            "usage"
        ] == {"input_tokens": 31, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 2188, "output_tokens": 74}  # fmt: skip
        assert [o.type for o in resp.output] == ["message", "function_call"]

    def test_cache_writes_are_priced_at_the_write_price(self):
        body = {
            **self.body,
            "usage": {
                "input_tokens": 100,
                "cache_creation_input_tokens": 2000,
                "cache_read_input_tokens": 1000,
                "output_tokens": 50,
            },
        }
        usage = anthropic.parse_response(body).usage
        assert usage == Usage(3100, 1000, 50, cache_write_input_tokens=2000)
        sonnet = Catalog.build().resolve("claude-sonnet-4").entry.price
        assert replace(sonnet, long_context=None) == Price(
            3_000_000, 300_000, 15_000_000, cache_write=3_750_000, web_search=10_000
        )
        # 100 x 3 + 1000 x 0.30 + 2000 x 3.75 + 50 x 15 = 8850 micro-USD
        assert cost_micros(usage, sonnet) == 8850
        # A price without a cache-write entry bills writes as plain input.
        assert cost_micros(usage, Price(3_000_000, 300_000, 15_000_000)) == 7350

    @pytest.mark.parametrize(
        ("upstream", "normalised", "chat", "responses_status"),
        [
            ("end_turn", "end_turn", "stop", "completed"),
            ("stop_sequence", "stop_sequence", "stop", "completed"),
            ("max_tokens", "max_tokens", "length", "incomplete"),
            ("model_context_window_exceeded", "max_tokens", "length", "incomplete"),
            ("refusal", "content_filter", "content_filter", "incomplete"),
            ("pause_turn", "pause", "stop", "completed"),
        ],
    )
    def test_stop_reasons(self, upstream: str, normalised: str, chat: str, responses_status: str):
        body = {**self.body, "content": [{"type": "text", "text": "x"}], "stop_reason": upstream}
        response = anthropic.parse_response(body)
        assert response.stop_reason == normalised
        rendered_chat, _, rendered_resp = sdk_checks(response)
        assert rendered_chat.choices[0].finish_reason == chat
        assert rendered_resp.status == responses_status

    def test_malformed_answer_is_the_providers_fault(self):
        with pytest.raises(UpstreamError):
            upstream_body(anthropic.parse_response, {"content": "oops"}, "anthropic")
        with pytest.raises(UpstreamError):
            upstream_body(anthropic.parse_response, [], "anthropic")


class TestResponsesResponses:
    def test_message_and_function_call(self):
        response = responses.parse_response(
            load("openai-responses/02_response_nonstream_message_and_function_call.json")
        )
        assert response.usage == Usage(1536, 1280, 38, 0)
        assert response.stop_reason == "tool_use"
        assert response.parts == [
            ir.Text("Let me check the current weather in Paris."),
            ir.ToolCall("call_H2pX9rLq4VzN7tKc1WbY6sJe", "get_weather",
                        '{"location":"Paris, France","unit":"celsius"}'),
        ]  # fmt: skip
        _, claude, resp = sdk_checks(response)
        assert claude.stop_reason == "tool_use"
        assert claude.usage.input_tokens == 256
        assert claude.usage.cache_read_input_tokens == 1280
        assert resp.output_text == "Let me check the current weather in Paris."

    def test_incomplete(self):
        body = {"id": "r", "model": "m", "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"}, "output": []}  # fmt: skip
        assert responses.parse_response(body).stop_reason == "max_tokens"


class TestGeminiResponses:
    def test_function_calls_get_ids_and_thinking_counts_as_output(self):
        response = gemini.parse_response(load("gemini/04_response_function_calls_usage.json"))
        assert response.usage == Usage(
            input_tokens=1318, cached_input_tokens=1021, output_tokens=42 + 111,
            reasoning_tokens=111,
        )  # fmt: skip
        assert response.stop_reason == "tool_use"  # Gemini says STOP; the calls say tool use
        assert (response.id, response.model) == ("qF6jaM2bK9mZz7IPwOq1kQw", "gemini-2.5-flash")
        calls = [p for p in response.parts if isinstance(p, ir.ToolCall)]
        assert [c.id for c in calls] == [
            "call_qF6jaM2bK9mZz7IPwOq1kQw_0", "call_qF6jaM2bK9mZz7IPwOq1kQw_1",
        ]  # fmt: skip
        assert [json.loads(c.arguments) for c in calls] == [
            {"location": "Paris, France", "unit": "celsius"},
            {"location": "London, UK", "unit": "celsius"},
        ]
        chat, claude, _ = sdk_checks(response)
        assert chat.choices[0].finish_reason == "tool_calls"
        assert chat.usage is not None
        assert chat.usage.completion_tokens == 153
        assert [b.type for b in claude.content] == ["tool_use", "tool_use"]
        # Rendered back as Gemini, the answer carries the same parts and counts.
        again = gemini.render_response(response)
        assert (
            again["candidates"][0]["content"]["parts"]
            == load("gemini/04_response_function_calls_usage.json")["candidates"][0]["content"][
                "parts"
            ]
        )
        assert again["usageMetadata"]["candidatesTokenCount"] == 42

    def test_thought_summary(self):
        response = gemini.parse_response(load("gemini/05_response_text_with_thought_summary.json"))
        assert response.usage == Usage(14, 0, 12 + 275, 275)
        assert response.stop_reason == "end_turn"
        assert isinstance(response.parts[0], ir.Thinking)
        assert response.parts[0].text.startswith("**Computing the product**")
        assert response.parts[1] == ir.Text("27 \u00d7 453 = **12,231**")
        chat, claude, _ = sdk_checks(response)
        assert chat.choices[0].message.content == "27 \u00d7 453 = **12,231**"
        assert [b.type for b in claude.content] == ["thinking", "text"]

    @pytest.mark.parametrize(
        ("finish", "expected"),
        [("MAX_TOKENS", "max_tokens"), ("SAFETY", "content_filter"),
         ("RECITATION", "content_filter"), ("MALFORMED_FUNCTION_CALL", "other")],
    )  # fmt: skip
    def test_finish_reasons(self, finish: str, expected: str):
        body = {"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"},
                                "finishReason": finish}]}  # fmt: skip
        assert gemini.parse_response(body).stop_reason == expected

    def test_blocked_prompt(self):
        body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {
            "promptTokenCount": 5, "totalTokenCount": 5}}  # fmt: skip
        response = gemini.parse_response(body)
        assert (response.stop_reason, response.parts, response.usage) == (
            "content_filter",
            [],
            Usage(5),
        )


class TestCacheWritePrices:
    def test_config_can_set_and_keep_the_write_price(self):
        catalog = Catalog.build({
            "claude-sonnet-4-20250514": {"input": 2_000_000},
            "claude-3-5-haiku-20241022": {"cache_write": 1_200_000},
        })  # fmt: skip
        sonnet = catalog.resolve("claude-sonnet-4").entry.price
        assert replace(sonnet, long_context=None) == Price(
            2_000_000, 300_000, 15_000_000, cache_write=3_750_000, web_search=10_000
        )
        haiku = catalog.resolve("claude-3-5-haiku-20241022").entry.price
        assert haiku.cache_write_input == 1_200_000
        assert catalog.resolve("gpt-4o").entry.price.cache_write_input == 2_500_000
        with pytest.raises(ValueError, match="negative"):
            Catalog.build({"claude-opus-4-20250514": {"cache_write": -1}})
