"""Request translation: every request fixture parsed, and the cross-family round trips."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from api.errors import InvalidRequest
from api.gateway.translate import anthropic, gemini, ir, openai_chat, responses
from tests.unit.translate_support import load

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string", "description": "ISO 3166-1 alpha-2"},
        "units": {"type": "string", "enum": ["c", "f"]},
    },
    "required": ["city", "country", "units"],
    "additionalProperties": False,
}


class TestChatRequest:
    body = load("openai-chat/01_request_tools_stream.json")

    def test_fixture_parses(self):
        request = openai_chat.parse_request(self.body)
        assert request.model == "gpt-4o-2024-08-06"
        assert request.system == ["You are a helpful assistant. Use tools when they help."]
        assert request.messages == [
            ir.Message(
                "user",
                [
                    ir.Text(
                        "What's the weather like in Lisbon right now, and what's the price of MSFT?"
                    )
                ],
            )
        ]
        assert [t.name for t in request.tools] == ["get_weather", "get_stock_price"]
        assert request.tools[0].parameters == WEATHER_SCHEMA
        assert request.tools[0].strict is True
        assert request.tool_choice == ir.ToolChoice("auto")
        assert request.parallel_tool_calls is True
        assert request.max_output_tokens == 1024
        assert request.stream is True

    def test_to_anthropic(self):
        body = anthropic.render_request(openai_chat.parse_request(self.body))
        assert body == {
            "model": "gpt-4o-2024-08-06",
            "max_tokens": 1024,
            "system": "You are a helpful assistant. Use tools when they help.",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "What's the weather like in Lisbon right now, "
                            "and what's the price of MSFT?",
                        }
                    ],
                }
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "input_schema": WEATHER_SCHEMA,
                    "description": "Get the current weather for a city",
                },
                {
                    "name": "get_stock_price",
                    "input_schema": {
                        "type": "object",
                        "properties": {
                            "ticker": {"type": "string"},
                            "exchange": {"type": "string"},
                        },
                        "required": ["ticker", "exchange"],
                        "additionalProperties": False,
                    },
                    "description": "Fetch the latest price for a given ticker",
                },
            ],
            "tool_choice": {"type": "auto"},
            "stream": True,
        }

    def test_to_gemini_cleans_the_schema(self):
        body = gemini.render_request(openai_chat.parse_request(self.body))
        assert body["systemInstruction"] == {
            "parts": [{"text": "You are a helpful assistant. Use tools when they help."}]
        }
        assert body["contents"][0]["role"] == "user"
        weather = body["tools"][0]["functionDeclarations"][0]
        assert weather == {
            "name": "get_weather",
            "description": "Get the current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "country": {"type": "string", "description": "ISO 3166-1 alpha-2"},
                    "units": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city", "country", "units"],
            },
        }
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
        assert body["generationConfig"] == {"maxOutputTokens": 1024}
        assert "model" not in body
        assert "stream" not in body
        assert gemini.request_path("gemini-2.5-flash", stream=True) == (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        )

    def test_multi_turn_tools_images_and_results(self):
        body = {
            "model": "claude-sonnet-4",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}},
                        {"id": "call_2", "type": "function",
                         "function": {"name": "get_time", "arguments": '{"city":"Lisbon"}'}},
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "21C sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": '{"time":"10:00"}'},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "Thanks"},
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
            "stop": "END",
            "temperature": 1.5,
        }  # fmt: skip
        request = openai_chat.parse_request(body)
        assert request.system == ["Be brief.", "Answer in French."]
        claude = anthropic.render_request(request, default_max_tokens=8192)
        assert claude["max_tokens"] == 8192
        assert claude["system"] == "Be brief.\n\nAnswer in French."
        assert claude["temperature"] == 1.0  # Anthropic's range ends at 1
        assert claude["stop_sequences"] == ["END"]
        assert claude["tool_choice"] == {
            "type": "tool", "name": "get_weather", "disable_parallel_tool_use": True,
        }  # fmt: skip
        assert claude["messages"] == [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBO"}},
                {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Lisbon"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time",
                 "input": {"city": "Lisbon"}},
            ]},
            {"role": "user", "content": [  # both results, then the text: one merged turn
                {"type": "tool_result", "tool_use_id": "call_1",
                 "content": [{"type": "text", "text": "21C sunny"}]},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": '{"time":"10:00"}'}]},
                {"type": "text", "text": "Thanks"},
            ]},
        ]  # fmt: skip
        google = gemini.render_request(request)
        assert google["contents"] == [
            {"role": "user", "parts": [
                {"text": "Weather here?"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/a.jpg"}},
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Lisbon"}}},
                {"functionCall": {"name": "get_time", "args": {"city": "Lisbon"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather",
                                      "response": {"result": "21C sunny"}}},
                {"functionResponse": {"name": "get_time", "response": {"time": "10:00"}}},
                {"text": "Thanks"},
            ]},
        ]  # fmt: skip
        assert google["toolConfig"] == {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
        }
        assert google["generationConfig"] == {"temperature": 1.5, "stopSequences": ["END"]}
        # A tool without parameters: Gemini rejects an OBJECT schema with no properties.
        assert google["tools"] == [{"functionDeclarations": [{"name": "get_weather"}]}]

    @pytest.mark.parametrize(
        ("choice", "claude", "google"),
        [
            ("auto", {"type": "auto"}, {"mode": "AUTO"}),
            ("required", {"type": "any"}, {"mode": "ANY"}),
            ("none", {"type": "none"}, {"mode": "NONE"}),
        ],
    )
    def test_tool_choice_modes(self, choice: str, claude: Any, google: Any):
        body = {**self.body, "tool_choice": choice, "parallel_tool_calls": None}
        request = openai_chat.parse_request(body)
        assert anthropic.render_request(request)["tool_choice"] == claude
        assert gemini.render_request(request)["toolConfig"]["functionCallingConfig"] == google

    def test_extras_only_reach_the_same_family(self):
        request = openai_chat.parse_request({**self.body, "seed": 7, "user": "u1"})
        assert request.extras == {"seed": 7, "user": "u1"}
        assert openai_chat.render_request(request)["seed"] == 7
        assert "seed" not in anthropic.render_request(request)
        assert "seed" not in gemini.render_request(request)

    def test_chat_round_trip_keeps_the_request(self):
        again = openai_chat.render_request(openai_chat.parse_request(self.body))
        assert again["messages"] == [
            {"role": "system", "content": self.body["messages"][0]["content"]},
            self.body["messages"][1],
        ]
        assert again["tools"] == self.body["tools"]
        assert again["max_completion_tokens"] == 1024
        assert again["stream_options"] == {"include_usage": True}


class TestAnthropicRequest:
    body = load("anthropic/01_request_system_tools.json")

    def test_fixture_parses(self):
        request = anthropic.parse_request(self.body)
        assert request.system == [
            "You are a concise weather assistant. Always call get_weather for current "
            "conditions; never guess.",
            "<long reference document, >= 1024 tokens for Sonnet, elided here>",
        ]
        assert request.tools[0].name == "get_weather"
        assert request.tools[0].parameters["required"] == ["location"]
        assert request.tool_choice == ir.ToolChoice("auto")
        assert (request.max_output_tokens, request.temperature) == (1024, 0.2)
        assert request.stream is True

    def test_to_openai_chat(self):
        body = openai_chat.render_request(anthropic.parse_request(self.body))
        assert body["messages"] == [
            {"role": "system", "content": "You are a concise weather assistant. Always call "
             "get_weather for current conditions; never guess.\n\n<long reference document, "
             ">= 1024 tokens for Sonnet, elided here>"},
            {"role": "user", "content": "What's the weather like in Paris right now?"},
        ]  # fmt: skip
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": self.body["tools"][0]["input_schema"],
                    "description": "Get the current weather in a given location",
                },
            }
        ]
        assert body["tool_choice"] == "auto"
        assert body["max_completion_tokens"] == 1024
        assert body["temperature"] == 0.2
        assert body["stream_options"] == {"include_usage": True}
        deepseek = openai_chat.render_request(
            anthropic.parse_request(self.body), max_tokens_field="max_tokens"
        )
        assert deepseek["max_tokens"] == 1024
        assert "max_completion_tokens" not in deepseek

    def test_to_gemini(self):
        body = gemini.render_request(anthropic.parse_request(self.body))
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "What's the weather like in Paris right now?"}]}
        ]
        assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
            "type": "object",
            "properties": {
                "location": {"type": "string",
                             "description": "The city and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                         "description": "Temperature unit"},
            },
            "required": ["location"],
        }  # fmt: skip
        assert body["generationConfig"] == {"maxOutputTokens": 1024, "temperature": 0.2}

    def test_thinking_request_and_signed_history(self):
        request = anthropic.parse_request(load("anthropic/04a_request_thinking.json"))
        assert (request.thinking_budget, request.max_output_tokens) == (10000, 16000)
        assert gemini.render_request(request)["generationConfig"] == {
            "maxOutputTokens": 16000,
            "thinkingConfig": {"thinkingBudget": 10000, "includeThoughts": True},
        }
        history = {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "27 * 453?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "27*453=12231", "signature": "sig=="},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "12,231"},
                ]},
                {"role": "user", "content": "And times 2?"},
            ],
        }  # fmt: skip
        parsed = anthropic.parse_request(history)
        again = anthropic.render_request(parsed)
        assert again["messages"][1]["content"] == history["messages"][1]["content"]
        # Other families have no place for signed thinking: it is dropped, the text stays.
        chat = openai_chat.render_request(parsed)
        assert chat["messages"][1] == {"role": "assistant", "content": "12,231"}
        assert gemini.render_request(parsed)["contents"][1] == {
            "role": "model",
            "parts": [{"text": "12,231"}],
        }

    def test_unsigned_thinking_never_reaches_anthropic(self):
        chat = {
            "model": "x",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "reasoning_content": "think"},
            ],
        }
        body = anthropic.render_request(openai_chat.parse_request(chat))
        assert body["messages"][1] == {
            "role": "assistant",
            "content": [{"type": "text", "text": "hello"}],
        }

    def test_server_tools_are_dropped_with_a_warning(self):
        body = copy.deepcopy(self.body)
        body["tools"].append({"type": "web_search_20250305", "name": "web_search"})
        request = anthropic.parse_request(body)
        assert [t.name for t in request.tools] == ["get_weather"]
        assert request.warnings == ["tool 'web_search' dropped"]

    def test_mid_conversation_system_messages_fold_into_the_system_in_order(self):
        """Claude Code sends `role: "system"` messages inside `messages` (string or text blocks
        with `cache_control`): off Claude they join the system instruction, in order."""
        body = {
            "model": "gpt-4o", "max_tokens": 64, "system": "First.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "system", "content": [
                    {"type": "text", "text": "Second.", "cache_control": {"type": "ephemeral"}},
                ]},
                {"role": "user", "content": [{"type": "text", "text": "Go",
                                              "cache_control": {"type": "ephemeral"}}]},
                {"role": "system", "content": "Third."},
            ],
        }  # fmt: skip
        request = anthropic.parse_request(body)
        assert request.system == ["First.", "Second.", "Third."]
        assert [m.role for m in request.messages] == ["user", "assistant", "user"]
        chat = openai_chat.render_request(request)
        assert chat["messages"][0] == {"role": "system", "content": "First.\n\nSecond.\n\nThird."}
        assert "cache_control" not in str(chat)
        google = gemini.render_request(request)
        assert google["systemInstruction"] == {"parts": [{"text": "First.\n\nSecond.\n\nThird."}]}
        assert "cache_control" not in str(google)
        assert responses.render_request(request)["instructions"] == "First.\n\nSecond.\n\nThird."

    def test_documents_a_tool_read_translate_as_text_or_are_named(self):
        """Claude Code's Read of a PDF answers with a `document` block beside its text: off
        Claude, text documents are text, and a PDF is replaced by a line and a warning."""
        pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                              "data": "JVBERi0xLjQK"}}  # fmt: skip
        plain = {"type": "text", "media_type": "text/plain", "data": "Plain."}
        notes = {"type": "document", "title": "notes.txt", "source": plain}
        body = {
            "model": "gpt-4o", "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Read it"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "PDF read"},
                                                          pdf]}]},
                {"role": "user", "content": [notes]},
            ],
        }  # fmt: skip
        request = anthropic.parse_request(body)
        assert request.warnings == ["documents dropped: only text documents are translated"]
        result = request.messages[2].parts[0]
        assert isinstance(result, ir.ToolResult)
        assert [p.text for p in result.content if isinstance(p, ir.Text)] == [
            "PDF read", "[a document: not shown, only text documents reach this model]"
        ]  # fmt: skip
        assert request.messages[3].parts == [ir.Text("Plain.")]
        chat = openai_chat.render_request(request)
        assert chat["messages"][2]["role"] == "tool"
        assert "JVBERi0" not in str(chat)
        assert "JVBERi0" not in str(gemini.render_request(request))

    @pytest.mark.parametrize(
        "content", [[{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}], 7]
    )
    def test_a_system_message_must_be_text(self, content: Any):
        body = {"model": "gpt-4o", "max_tokens": 8,
                "messages": [{"role": "system", "content": content}]}  # fmt: skip
        with pytest.raises(InvalidRequest) as raised:
            anthropic.parse_request(body)
        assert (raised.value.param or "").startswith("messages[0].content")

    @pytest.mark.parametrize(
        ("model", "sent"), [("gemini-2.5-flash", 24_576), ("gemini-2.5-pro", 31_999)]
    )
    def test_a_thinking_budget_over_the_gemini_models_maximum_is_lowered(
        self, model: str, sent: int
    ):
        """Claude Code asks Claude models for 31,999 thinking tokens; Gemini's Flash models
        take at most 24,576 (a larger budget is a 400 from Google)."""
        said = [{"role": "user", "content": "Hi"}]
        body = {"model": model, "max_tokens": 32_000, "messages": said,
                "thinking": {"type": "enabled", "budget_tokens": 31_999}}  # fmt: skip
        request = anthropic.parse_request(body)
        google = gemini.render_request(request)
        assert google["generationConfig"]["thinkingConfig"]["thinkingBudget"] == sent
        lowered = [w for w in request.warnings if "thinking budget" in w]
        assert lowered == (
            [] if sent == 31_999 else ["thinking budget lowered to 24576, this model's maximum"]
        )

    def test_cache_control_and_extras_stay_in_the_family(self):
        body = {**self.body, "metadata": {"user_id": "u"}, "top_k": 5}
        request = anthropic.parse_request(body)
        assert anthropic.render_request(request)["metadata"] == {"user_id": "u"}
        assert "top_k" not in openai_chat.render_request(request)


class TestResponsesRequest:
    body = load("openai-responses/01_request_function_tools.json")

    def test_fixture_parses(self):
        request = responses.parse_request(self.body)
        assert request.system == ["You are a helpful assistant. Call tools for live data."]
        assert request.messages == [
            ir.Message("user", [ir.Text("What's the weather in Paris right now?")])
        ]
        assert request.tools[0].name == "get_weather"
        assert request.tools[0].strict is True
        assert (request.max_output_tokens, request.stream) == (1024, False)
        assert request.extras == {"store": False}

    def test_to_openai_chat(self):
        body = openai_chat.render_request(responses.parse_request(self.body))
        assert body == {
            "model": "gpt-4.1-2025-04-14",
            "messages": [
                {"role": "system",
                 "content": "You are a helpful assistant. Call tools for live data."},
                {"role": "user", "content": "What's the weather in Paris right now?"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "parameters": self.body["tools"][0]["parameters"],
                "description": "Get the current weather for a location",
                "strict": True,
            }}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "max_completion_tokens": 1024,
        }  # fmt: skip

    def test_to_anthropic(self):
        body = anthropic.render_request(responses.parse_request(self.body))
        assert body["system"] == "You are a helpful assistant. Call tools for live data."
        assert body["max_tokens"] == 1024
        assert body["tools"][0]["input_schema"] == self.body["tools"][0]["parameters"]
        assert "store" not in body

    def test_to_gemini_turns_a_type_array_into_nullable(self):
        body = gemini.render_request(responses.parse_request(self.body))
        assert body["tools"][0]["functionDeclarations"][0]["parameters"] == {
            "type": "object",
            "properties": {
                "location": {"type": "string",
                             "description": "City and country, e.g. Paris, France"},
                "unit": {"type": "string", "nullable": True, "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        }  # fmt: skip

    def test_items_tool_calls_and_outputs(self):
        body = {
            "model": "gemini-2.5-flash",
            "input": [
                {"role": "developer", "content": "Be terse."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Paris?"},
                    {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/"},
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [],
                 "encrypted_content": "enc"},
                {"type": "function_call", "call_id": "call_a", "name": "get_weather",
                 "arguments": '{"location":"Paris"}'},
                {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            ],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "tools": [{"type": "web_search"}],
        }  # fmt: skip
        request = responses.parse_request(body)
        assert request.system == ["Be terse."]
        assert request.warnings == ["tool type 'web_search' dropped"]
        assert request.tool_choice == ir.ToolChoice("tool", "get_weather")
        google = gemini.render_request(request)
        assert google["contents"] == [
            {"role": "user", "parts": [
                {"text": "Paris?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
            ]},
        ]  # fmt: skip
        claude = anthropic.render_request(request)
        assert claude["messages"][1]["content"] == [
            {"type": "thinking", "thinking": "", "signature": "enc"},
            {"type": "tool_use", "id": "call_a", "name": "get_weather",
             "input": {"location": "Paris"}},
        ]  # fmt: skip
        chat = openai_chat.render_request(request)
        assert chat["messages"][2:] == [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        ]  # fmt: skip

    def test_string_input_and_round_trip(self):
        request = responses.parse_request({"model": "m", "input": "hi", "stream": True})
        assert request.messages == [ir.Message("user", [ir.Text("hi")])]
        assert responses.render_request(request) == {
            "model": "m",
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": "hi"}]}],
            "stream": True,
        }  # fmt: skip


class TestGeminiRequest:
    def test_tools_and_tool_config(self):
        request = gemini.parse_request(
            load("gemini/01_request_generateContent_tools_toolConfig.json"),
            model="gemini-2.5-flash",
        )
        assert request.system == [
            "You are a concise weather assistant. Use the tools for live data."
        ]
        assert [t.name for t in request.tools] == ["get_weather", "get_local_time"]
        assert request.tool_choice == ir.ToolChoice("tool", "get_weather")
        assert (request.temperature, request.max_output_tokens) == (0.2, 1024)
        assert request.thinking_budget == 1024
        chat = openai_chat.render_request(request)
        assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}

    def test_mode_variants(self):
        variants = load("gemini/02_toolConfig_mode_variants.json")
        expected = {
            "AUTO_default": ir.ToolChoice("auto"),
            "ANY_forced_any_declared_function": ir.ToolChoice("required"),
            "ANY_restricted_to_allowed_names": ir.ToolChoice("tool", "get_weather"),
            "NONE_tools_disabled": ir.ToolChoice("none"),
            "VALIDATED_newer_mode_UNCERTAIN_availability": ir.ToolChoice("auto"),
        }
        for name, config in variants.items():
            request = gemini.parse_request({"contents": [], "toolConfig": config})
            assert request.tool_choice == expected[name], name

    def test_follow_up_pairs_responses_with_calls_by_name(self):
        body = load("gemini/03_request_followup_functionResponse.json")
        request = gemini.parse_request(body, model="gemini-2.5-flash")
        calls = [p for p in request.messages[1].parts if isinstance(p, ir.ToolCall)]
        results = [p for p in request.messages[2].parts if isinstance(p, ir.ToolResult)]
        assert [c.arguments for c in calls] == [
            '{"location":"Paris, France","unit":"celsius"}',
            '{"location":"London, UK","unit":"celsius"}',
        ]
        assert calls[0].signature is not None
        assert calls[0].signature.startswith("CiQB0e2K")
        assert [r.tool_call_id for r in results] == [c.id for c in calls]
        assert calls[0].id != calls[1].id
        # Anthropic wants tool_use ids and matching tool_result ids.
        claude = anthropic.render_request(request)
        assert [b["tool_use_id"] for b in claude["messages"][2]["content"]] == [
            b["id"] for b in claude["messages"][1]["content"]
        ]
        # And back to Gemini: the same contents, signature included.
        assert gemini.render_request(request)["contents"] == body["contents"]


class TestSchemaCleaning:
    def test_refs_defs_and_unknown_keywords(self):
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {"Unit": {"type": "string", "enum": ["c", "f"], "const": None}},
            "properties": {
                "unit": {"$ref": "#/$defs/Unit", "description": "unit"},
                "tags": {"type": "array", "items": {"type": "string", "format": "email"},
                         "uniqueItems": True},
                "mode": {"const": "fast"},
                "either": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                "opt": {"type": ["integer", "string", "null"]},
                "nested": {"type": "object", "properties": {}, "additionalProperties": True},
            },
            "required": ["unit", "ghost"],
            "additionalProperties": False,
            "strict": True,
        }  # fmt: skip
        assert gemini.clean_schema(schema) == {
            "type": "object",
            "properties": {
                "unit": {"type": "string", "enum": ["c", "f"], "description": "unit"},
                "tags": {"type": "array", "items": {"type": "string", "format": "email"}},
                "mode": {"enum": ["fast"]},
                "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "opt": {"nullable": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "nested": {"type": "object"},
            },
            "required": ["unit"],
        }

    def test_recursive_refs_stop(self):
        schema = {"$defs": {"Node": {"type": "object", "properties": {
            "child": {"$ref": "#/$defs/Node"}}}}, "$ref": "#/$defs/Node"}  # fmt: skip
        cleaned = gemini.clean_schema(schema)
        depth = 0
        while "properties" in cleaned:
            cleaned = cleaned["properties"]["child"]
            depth += 1
        assert 3 < depth < 20


class TestMalformedRequests:
    @pytest.mark.parametrize(
        ("module", "body", "param"),
        [
            (openai_chat, {"messages": []}, "model"),
            (openai_chat, {"model": "m"}, "messages"),
            (openai_chat, {"model": "m", "messages": "hi"}, "messages"),
            (openai_chat, {"model": "m", "messages": ["hi"]}, "messages[0]"),
            (openai_chat, {"model": "m", "messages": [{"role": "wizard"}]}, "messages[0].role"),
            (openai_chat, {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "input_audio"}]}]}, "messages[0].content[0].type"),
            (openai_chat, {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].image_url.url"),
            (openai_chat, {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
             "messages[0].tool_call_id"),
            (openai_chat, {"model": "m", "messages": [], "max_tokens": -1}, "max_tokens"),
            (openai_chat, {"model": "m", "messages": [], "temperature": "hot"}, "temperature"),
            (openai_chat, {"model": "m", "messages": [], "stop": [1]}, "stop[0]"),
            (openai_chat, {"model": "m", "messages": [], "tool_choice": "sometimes"},
             "tool_choice"),
            (openai_chat, {"model": "m", "messages": [], "tools": [
                {"type": "function", "function": {"name": "f", "parameters": []}}]},
             "tools[0].function.parameters"),
            (anthropic, {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
             "messages[0].role"),
            (anthropic, {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file"}}]}]},
             "messages[0].content[0].source.type"),
            (anthropic, {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}]},
             "messages[0].content[0].input"),
            (anthropic, {"model": "m", "messages": [], "tool_choice": {"type": "maybe"}},
             "tool_choice.type"),
            (anthropic, {"model": "m", "messages": [], "tools": [{"name": "f"}]},
             "tools[0].input_schema"),
            (anthropic, {"model": "m", "messages": [], "system": [{"type": "text"}]},
             "system[0].text"),
            (responses, {"model": "m"}, "input"),
            (responses, {"model": "m", "input": [{"type": "item_reference", "id": "x"}]},
             "input[0].type"),
            (responses, {"model": "m", "input": "hi", "previous_response_id": "resp_1"},
             "previous_response_id"),
            (responses, {"model": "m", "input": [{"type": "function_call", "name": "f",
                                                  "arguments": "{}"}]}, "input[0].call_id"),
            (gemini, {"contents": [{"role": "user", "parts": [{"video": 1}]}]},
             "contents[0].parts[0]"),
            (gemini, {"contents": {}}, "contents"),
        ],
    )  # fmt: skip
    def test_names_the_field(self, module: Any, body: dict[str, Any], param: str):
        with pytest.raises(InvalidRequest) as caught:
            module.parse_request(body)
        assert caught.value.param == param

    def test_bad_tool_arguments_fail_when_rendering_for_anthropic(self):
        request = openai_chat.parse_request({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
             "function": {"name": "f", "arguments": "{not json"}}]}]})  # fmt: skip
        with pytest.raises(InvalidRequest) as caught:
            anthropic.render_request(request)
        assert caught.value.param == "messages[0]"
        with pytest.raises(InvalidRequest):
            gemini.render_request(request)

    def test_a_result_for_an_unknown_call_cannot_go_to_gemini(self):
        request = openai_chat.parse_request({"model": "m", "messages": [
            {"role": "tool", "tool_call_id": "nobody", "content": "x"}]})  # fmt: skip
        with pytest.raises(InvalidRequest) as caught:
            gemini.render_request(request)
        assert caught.value.param == "messages[0]"


class TestWarnings:
    def test_what_the_target_cannot_carry_is_reported(self):
        chat = openai_chat.parse_request({
            "model": "m", "reasoning_effort": "high", "parallel_tool_calls": False,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        })  # fmt: skip
        anthropic.render_request(chat)
        gemini.render_request(chat)
        assert chat.warnings == ["reasoning_effort dropped", "parallel_tool_calls=false dropped"]
        claude = anthropic.parse_request({
            "model": "m", "max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 5},
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                "content": [{"type": "image", "source": {"type": "url", "url": "https://i"}}]}]}],
        })  # fmt: skip
        openai_chat.render_request(claude)
        assert claude.warnings == ["thinking budget dropped", "images in tool results dropped"]


CALLS_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and London?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": "21C"},
    {"role": "tool", "tool_call_id": "call_b", "content": "15C"},
]  # fmt: skip


class TestGeminiThoughtSignatures:
    """Gemini 3 refuses function calls in the history without their step's signature."""

    def _model_parts(self, model: str, signature: str | None = None) -> list[dict[str, Any]]:
        request = openai_chat.parse_request({"model": model, "messages": CALLS_HISTORY})
        if signature is not None:
            call = request.messages[1].parts[1]
            assert isinstance(call, ir.ToolCall)
            call.signature = signature
        contents = gemini.render_request(request)["contents"]
        [model_turn] = [c for c in contents if c["role"] == "model"]
        parts: list[dict[str, Any]] = model_turn["parts"]
        return parts

    def test_gemini_3_gets_the_placeholder_on_the_first_call_of_a_step(self):
        first, second = self._model_parts("gemini-3-pro-preview")
        assert first["thoughtSignature"] == "skip_thought_signature_validator"
        assert "thoughtSignature" not in second

    def test_a_signature_the_history_kept_is_sent_as_it_is(self):
        parts = self._model_parts("gemini-3-pro-preview", signature="CsQBAX...real")
        assert [p.get("thoughtSignature") for p in parts] == [None, "CsQBAX...real"]

    def test_earlier_models_get_no_placeholder(self):
        parts = self._model_parts("gemini-2.5-flash")
        assert not any("thoughtSignature" in part for part in parts)
