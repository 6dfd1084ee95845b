"""Google's shape inbound, the pure parts: IR streams encoded as Gemini chunks (read back with
google-genai's own types), the cost policy of Gemini's fields, Google's error shape, a key in
the query string, and what the translator reads from a Gemini request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import types

from api import errors
from api.error_handlers import google_path
from api.errors import InvalidRequest
from api.gateway import exposure
from api.gateway.catalog import Catalog
from api.gateway.pipeline import demand_for
from api.gateway.pricing import Usage
from api.gateway.translate import (
    anthropic_stream,
    gemini,
    gemini_fields,
    gemini_stream,
    ir,
    openai_chat_stream,
)
from api.middleware import google_query_key
from tests.unit.translate_support import data_of, decode, encode, replay

HELLO = [{"role": "user", "parts": [{"text": "Hello"}]}]


def chunks_of(body: bytes) -> list[types.GenerateContentResponse]:
    """An encoded stream as google-genai reads it, chunk by chunk."""
    assert body.endswith(b"\r\n\r\n")
    return [types.GenerateContentResponse.model_validate(p) for p in data_of(body)]


def text_of(chunks: list[types.GenerateContentResponse]) -> str:
    return "".join(chunk.text or "" for chunk in chunks)


class TestStreamEncoder:
    def test_a_chat_stream_becomes_text_chunks_then_the_finish_with_usage(self):
        events = decode(
            openai_chat_stream.StreamDecoder(),
            replay("openai-chat/04_stream_text_include_usage.sse"),
        )
        chunks = chunks_of(encode(gemini_stream.StreamEncoder(), events))
        expected = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
        assert text_of(chunks) == expected
        last = chunks[-1]
        assert last.candidates is not None
        assert last.candidates[0].finish_reason == types.FinishReason.STOP
        end = next(e for e in events if isinstance(e, ir.MessageEnd))
        assert last.usage_metadata is not None
        assert last.usage_metadata.prompt_token_count == end.usage.input_tokens
        assert last.usage_metadata.candidates_token_count == end.usage.output_tokens
        assert all(c.usage_metadata is None for c in chunks[:-1])
        assert {c.response_id for c in chunks} == {events[0].id}  # type: ignore[union-attr]

    def test_parallel_tool_calls_come_whole_one_chunk_each(self):
        events = decode(
            openai_chat_stream.StreamDecoder(),
            replay("openai-chat/06_stream_parallel_tool_calls_split_args.sse"),
        )
        chunks = chunks_of(encode(gemini_stream.StreamEncoder(), events))
        calls = [call for chunk in chunks for call in chunk.function_calls or []]
        assert [(c.name, c.args) for c in calls] == [
            ("get_weather", {"city": "Lisbon", "country": "PT", "units": "c"}),
            ("get_stock_price", {"ticker": "MSFT", "exchange": "NASDAQ"}),
        ]
        assert [len(chunk.function_calls or []) for chunk in chunks[:-1]] == [1, 1]

    def test_thinking_is_a_thought_part_and_the_text_follows(self):
        events = decode(
            anthropic_stream.StreamDecoder(), replay("anthropic/04_stream_thinking_then_text.sse")
        )
        payloads = data_of(encode(gemini_stream.StreamEncoder(), events))
        thoughts = [p for c in payloads for p in c["candidates"][0]["content"]["parts"]
                    if p.get("thought")]  # fmt: skip
        assert thoughts
        chunks = [types.GenerateContentResponse.model_validate(p) for p in payloads]
        thought_text = "".join(e.text for e in events if isinstance(e, ir.ThinkingDelta))
        assert "".join(p["text"] for p in thoughts) == thought_text
        answer = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
        assert text_of(chunks) == answer  # google-genai's `.text` leaves thoughts out
        unasked = data_of(encode(gemini_stream.StreamEncoder(thoughts=False), events))
        assert not [p for c in unasked for p in c["candidates"][0]["content"]["parts"]
                    if p.get("thought")]  # fmt: skip

    @pytest.mark.parametrize("name", ["06_stream_text_alt_sse", "07_stream_function_calls_alt_sse"])
    def test_a_gemini_stream_round_trips_through_the_ir(self, name: str):
        original = replay(f"gemini/{name}.sse")
        events = decode(gemini_stream.StreamDecoder(), original)
        again = data_of(encode(gemini_stream.StreamEncoder(), events))

        def parts(payloads: list[Any]) -> list[dict[str, Any]]:
            found = [p for c in payloads for p in c["candidates"][0]["content"]["parts"]]
            return [p for p in found if p.get("text") != ""]

        before = [json.loads(e.data) for e in original]
        said = [p for p in parts(before) if "text" in p]
        assert "".join(p["text"] for p in parts(again) if "text" in p) == "".join(
            p["text"] for p in said
        )
        assert [p for p in parts(again) if "functionCall" in p] == [
            p for p in parts(before) if "functionCall" in p
        ]  # whole, with the signature on the call that had it
        assert (
            again[-1]["usageMetadata"]["thoughtsTokenCount"]
            == (before[-1]["usageMetadata"]["thoughtsTokenCount"])
        )

    def test_an_error_is_a_last_error_chunk_in_googles_shape(self):
        encoder = gemini_stream.StreamEncoder()
        body = encoder.feed(ir.MessageStart("r", "m")) + encoder.feed(ir.BlockStart(0, "text"))
        body += encoder.feed(ir.TextDelta(0, "Hi"))
        body += encoder.feed(ir.StreamError.from_app_error(errors.UpstreamUnavailable("busy")))
        assert encoder.feed(ir.TextDelta(0, "late")) == b""
        last = data_of(body)[-1]
        assert last["error"]["code"] == 503
        assert last["error"]["status"] == "UNAVAILABLE"
        assert last["error"]["message"] == "busy"
        assert gemini_stream.error_chunk(ir.StreamError("rate_limit", "slow"))["error"] == {
            "code": 429, "message": "slow", "status": "RESOURCE_EXHAUSTED",
        }  # fmt: skip

    def test_without_sse_the_chunks_are_one_json_array(self):
        events = decode(
            openai_chat_stream.StreamDecoder(),
            replay("openai-chat/04_stream_text_include_usage.sse"),
        )
        body = encode(gemini_stream.StreamEncoder(sse=False), events)
        chunks = [types.GenerateContentResponse.model_validate(p) for p in json.loads(body)]
        assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP  # type: ignore[index]
        failed = gemini_stream.StreamEncoder(sse=False)
        error = ir.StreamError("api_error", "broke")
        assert json.loads(failed.feed(error)) == [
            {"error": {"code": 500, "message": "broke", "status": "INTERNAL"}}
        ]

    def test_a_call_whose_arguments_were_cut_off_is_left_out(self):
        encoder = gemini_stream.StreamEncoder()
        events: list[ir.StreamEvent] = [
            ir.MessageStart("r", "m"),
            ir.BlockStart(0, "tool_call", id="c", name="f"),
            ir.ToolArgsDelta(0, '{"city": "Par'),
            ir.BlockStop(0),
            ir.MessageEnd("max_tokens", Usage(input_tokens=3, output_tokens=9)),
        ]
        (only,) = chunks_of(encode(encoder, events))
        assert not only.function_calls
        assert only.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS  # type: ignore[index]


class TestFieldPolicy:
    def _flash(self) -> Any:
        return Catalog.build().resolve("gemini-2.5-flash").entry

    def test_free_fields_pass_untouched(self):
        body = {
            "contents": HELLO,
            "systemInstruction": {"parts": [{"text": "x"}]},
            "safetySettings": [],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "serviceTier": "FLEX",
            "generationConfig": {"temperature": 1, "topK": 2, "seed": 3,
                                 "thinkingConfig": {"thinkingBudget": -1, "includeThoughts": True},
                                 "responseMimeType": "application/json", "maxOutputTokens": 9},
        }  # fmt: skip
        seen = exposure.gemini(body)
        assert (seen.dropped, seen.warnings, seen.tools, seen.choices) == ([], [], None, 1)
        assert exposure.apply_gemini(seen, body) == body

    def test_candidate_count_multiplies_the_output_held(self):
        flash = self._flash()
        body = {"contents": HELLO, "generationConfig": {"candidateCount": 4}}
        view = {"messages": HELLO, "max_tokens": 100}
        demand = demand_for(view, flash, flash.price, exposure.gemini(body))
        assert demand.choices == 4

    @pytest.mark.parametrize("count", [0, 9, "2", True])
    def test_candidate_count_out_of_bounds_is_refused(self, count: Any):
        body = {"contents": HELLO, "generationConfig": {"candidateCount": count}}
        with pytest.raises(InvalidRequest) as refused:
            exposure.gemini(body)
        assert refused.value.param == "generationConfig.candidateCount"

    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"cachedContent": "cachedContents/1"}, "cachedContent"),
            ({"serviceTier": "priority"}, "serviceTier"),
            ({"generationConfig": {"responseModalities": ["TEXT", "AUDIO"]}},
             "generationConfig.responseModalities"),
            ({"generationConfig": {"speechConfig": {}}}, "generationConfig.speechConfig"),
            ({"generationConfig": {"imageConfig": {}}}, "generationConfig.imageConfig"),
            ({"tools": [{"mcpServers": []}]}, "tools[0].mcpServers"),
            ({"contents": [{"parts": [{"fileData": {
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/a"}}]}]},
             "fileData.fileUri"),
        ],
    )  # fmt: skip
    def test_fields_without_a_bound_are_refused(self, body: dict[str, Any], param: str):
        with pytest.raises(InvalidRequest) as refused:
            exposure.gemini({"contents": HELLO, **body})
        assert refused.value.param == param

    def test_google_run_tools_are_dropped_with_a_warning_and_functions_kept(self):
        functions = {"functionDeclarations": [{"name": "f"}]}
        body = {"contents": HELLO, "tools": [{**functions, "googleSearch": {}},
                                             {"urlContext": {}}, {"codeExecution": {}}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}  # fmt: skip
        seen = exposure.gemini(body)
        assert exposure.apply_gemini(seen, body)["tools"] == [functions]
        assert len(seen.warnings) == 3
        assert all("billed per use" in w for w in seen.warnings)
        only_search = {"contents": HELLO, "tools": [{"googleSearch": {}}],
                       "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}  # fmt: skip
        sent = exposure.apply_gemini(exposure.gemini(only_search), only_search)
        assert "tools" not in sent
        assert "toolConfig" not in sent

    def test_files_by_url_may_fill_the_context_window(self):
        flash = self._flash()
        video = {"fileData": {"mimeType": "video/mp4", "fileUri": "https://youtu.be/x"}}
        body = {"contents": [{"role": "user", "parts": [video]}]}
        seen = exposure.gemini(body)
        assert seen.whole_context
        demand = demand_for({"messages": body["contents"]}, flash, flash.price, seen)
        assert demand.input_tokens == flash.context_window

    def test_unknown_fields_follow_the_gateways_setting(self):
        body = {"contents": HELLO, "newThing": 1, "generationConfig": {"newKnob": 2},
                "tools": [{"newTool": {}}]}  # fmt: skip
        dropped = exposure.gemini(body)
        sent = exposure.apply_gemini(dropped, body)
        assert sent == {"contents": HELLO, "generationConfig": {}}
        assert "newThing" in dropped.warnings[0]
        assert "generationConfig.newKnob" in dropped.warnings[0]
        passed = exposure.gemini(body, "pass")
        assert exposure.apply_gemini(passed, body) == body
        with pytest.raises(InvalidRequest):
            exposure.gemini(body, "refuse")


# What google-genai 3.6 puts on the wire (captured): proto names in some nested objects.
SDK_BODY: dict[str, Any] = {
    "contents": [{"role": "user", "parts": [
        {"inlineData": {"data": "YWJj", "mime_type": "image/png"}},
        {"fileData": {"file_uri": "https://x/y.png", "mime_type": "image/png"}},
        {"text": "hi_there"}]}],
    "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters_json_schema": {
        "type": "object", "properties": {"the_city": {"type": "string"}}}}]}],
    "generationConfig": {"thinkingConfig": {"include_thoughts": True, "thinking_budget": 100}},
}  # fmt: skip


class TestSpellings:
    def test_proto_names_are_read_in_camel_case_and_client_data_left_alone(self):
        body = gemini_fields.canonical(SDK_BODY)
        parts = body["contents"][0]["parts"]
        assert parts[0] == {"inlineData": {"data": "YWJj", "mimeType": "image/png"}}
        assert parts[1] == {"fileData": {"fileUri": "https://x/y.png", "mimeType": "image/png"}}
        assert parts[2] == {"text": "hi_there"}
        declaration = body["tools"][0]["functionDeclarations"][0]
        assert declaration["parametersJsonSchema"]["properties"] == {"the_city": {"type": "string"}}
        thinking = body["generationConfig"]["thinkingConfig"]
        assert thinking == {"includeThoughts": True, "thinkingBudget": 100}
        parsed = gemini.parse_request(body, model="m")
        assert parsed.thinking_budget == 100
        assert parsed.tools[0].parameters["properties"] == {"the_city": {"type": "string"}}
        assert parsed.messages[0].parts[0] == ir.Image(media_type="image/png", data="YWJj")

    def test_no_field_escapes_the_cost_policy_by_its_other_name(self):
        snake = {"contents": [{"role": "user", "parts": [
                    {"file_data": {"file_uri": "https://www.youtube.com/watch?v=x"}}]}],
                 "generation_config": {"candidate_count": 8, "max_output_tokens": 5}}  # fmt: skip
        seen = exposure.gemini(gemini_fields.canonical(snake))
        assert seen.whole_context
        assert seen.choices == 8
        assert seen.dropped == []
        for refused in ({"cached_content": "cachedContents/1"},
                        {"contents": [{"parts": [{"file_data": {"file_uri": "files/abc"}}]}]},
                        {"tools": [{"mcp_servers": []}]}):  # fmt: skip
            with pytest.raises(InvalidRequest):
                exposure.gemini(gemini_fields.canonical({"contents": HELLO, **refused}))
        search = {"contents": HELLO, "tools": [{"google_search": {}}]}
        assert "googleSearch" in exposure.gemini(gemini_fields.canonical(search)).warnings[0]

    def test_gemini_schemas_are_read_as_json_schema(self):
        declaration = {"name": "f", "parameters": {"type": "OBJECT", "any_of": [
            {"type": "STRING"}], "properties": {"max_items": {"type": "INTEGER"}}}}  # fmt: skip
        body = gemini_fields.canonical(
            {"contents": HELLO, "tools": [{"functionDeclarations": [declaration]}]}
        )
        (tool,) = gemini.parse_request(body, model="m").tools
        assert tool.parameters == {"type": "object", "anyOf": [{"type": "string"}],
                                   "properties": {"max_items": {"type": "integer"}}}  # fmt: skip


class TestGoogleErrors:
    def test_the_shape_names_status_field_and_reason(self):
        body = errors.google_body(InvalidRequest("contents: required.", param="contents"))
        error = body["error"]
        assert (error["code"], error["status"], error["message"]) == (
            400, "INVALID_ARGUMENT", "contents: required."
        )  # fmt: skip
        assert error["details"][0]["reason"] == "INVALID_REQUEST"
        assert error["details"][1]["fieldViolations"] == [
            {"field": "contents", "description": "contents: required."}
        ]

    @pytest.mark.parametrize(
        ("error", "status"),
        [
            (errors.MissingApiKey(), "UNAUTHENTICATED"),
            (errors.BudgetExceeded(), "RESOURCE_EXHAUSTED"),
            (errors.PaymentRequired(), "FAILED_PRECONDITION"),
            (errors.ModelNotAllowed(), "PERMISSION_DENIED"),
            (errors.NotFound(), "NOT_FOUND"),
            (errors.UpstreamError(), "UNAVAILABLE"),
            (errors.UpstreamUnavailable(), "UNAVAILABLE"),
            (errors.UpstreamTimeout(), "DEADLINE_EXCEEDED"),
            (errors.InternalError(), "INTERNAL"),
            (errors.UpstreamClientError("bad", status=400, upstream_code="FAILED_PRECONDITION"),
             "FAILED_PRECONDITION"),
            (errors.UpstreamClientError("long", status=400, upstream_code="context_length"),
             "INVALID_ARGUMENT"),
        ],
    )  # fmt: skip
    def test_statuses(self, error: errors.AppError, status: str):
        assert errors.google_body(error)["error"]["status"] == status
        assert errors.google_body(error)["error"]["code"] == error.status_code

    def test_a_retry_hint_is_retry_info(self):
        limited = errors.RateLimited("slow down", headers={"retry-after": "27"})
        details = errors.google_body(limited)["error"]["details"]
        assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "27s"} in details

    @pytest.mark.parametrize(
        ("path", "google"),
        [
            ("/v1beta/models/gemini-2.5-flash:generateContent", True),
            ("/v1beta/models", True),
            ("/v1/models/gpt-4o:streamGenerateContent", True),
            ("/v1/models", False),
            ("/v1/models/gpt-4o", False),
            ("/v1/chat/completions", False),
        ],
    )
    def test_which_paths_answer_in_googles_shape(self, path: str, google: bool):
        assert google_path(path) is google


class TestQueryKey:
    def _scope(self, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {"path": path, "query_string": query, "headers": headers}

    def test_on_googles_paths_it_becomes_the_header(self):
        scope = self._scope("/v1beta/models/m:streamGenerateContent", b"alt=sse&key=qlk_x", [])
        google_query_key(scope)
        assert scope["query_string"] == b"alt=sse"
        assert scope["headers"] == [(b"x-goog-api-key", b"qlk_x")]

    def test_a_header_key_wins_and_the_query_key_is_still_removed(self):
        given = [(b"authorization", b"Bearer qlk_h")]
        scope = self._scope("/v1/models/m:generateContent", b"key=qlk_q", given)
        google_query_key(scope)
        assert scope["query_string"] == b""
        assert scope["headers"] == given

    def test_elsewhere_it_is_only_removed(self):
        scope = self._scope("/v1/usage", b"key_id=k1&key=qlk_q&monkey=1", [])
        google_query_key(scope)
        assert scope["query_string"] == b"key_id=k1&monkey=1"
        assert scope["headers"] == []


class TestTranslatorReads:
    def test_dynamic_thinking_is_the_targets_default(self):
        body = {"contents": HELLO, "generationConfig": {"thinkingConfig": {"thinkingBudget": -1}}}
        assert gemini.parse_request(body, model="m").thinking_budget is None

    def test_json_mode_and_schemas(self):
        items = {"type": "ARRAY", "items": {"type": "STRING"}}
        schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}, "xs": items}}
        config = {"responseMimeType": "application/json", "responseSchema": schema}
        body = {"contents": HELLO, "generationConfig": config}
        parsed = gemini.parse_request(body, model="m").output_format
        lowered_items = {"type": "array", "items": {"type": "string"}}
        lowered = {"type": "object", "properties": {"n": {"type": "integer"}, "xs": lowered_items}}
        assert parsed == {"type": "json_schema", "name": "response", "schema": lowered}
        plain = {"type": "object", "additionalProperties": False}
        body["generationConfig"] = {"responseMimeType": "application/json",
                                    "responseJsonSchema": plain}  # fmt: skip
        assert gemini.parse_request(body, model="m").output_format["schema"] == plain  # type: ignore[index]
        body["generationConfig"] = {"responseMimeType": "application/json"}
        assert gemini.parse_request(body, model="m").output_format == {"type": "json_object"}
        body["generationConfig"] = {"responseMimeType": "text/plain"}
        assert gemini.parse_request(body, model="m").output_format is None

    def test_a_function_response_pairs_with_its_call_by_id_when_both_carry_one(self):
        body = {"contents": [
            {"role": "user", "parts": [{"text": "both?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"id": "a", "name": "f", "args": {"x": 1}}},
                {"functionCall": {"id": "b", "name": "f", "args": {"x": 2}}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"id": "b", "name": "f", "response": {"r": 2}}},
                {"functionResponse": {"id": "a", "name": "f", "response": {"r": 1}}}]},
        ]}  # fmt: skip
        results = gemini.parse_request(body, model="m").messages[2].parts
        assert [r.tool_call_id for r in results] == ["b", "a"]  # type: ignore[union-attr]
