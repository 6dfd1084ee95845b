"""`/v1/responses` to an OpenAI model: the client's body reaches OpenAI's own Responses API as
sent (but for the model, the cap and the hosted tools billed per call), its stream comes back
event for event, and what OpenAI reports is metered, through a real server and the fake
upstream replaying the recorded Responses fixtures."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.factories.chat import timed_stream
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_seen
from tests.fakes.upstream import FakeUpstream, sse_events

GPT_4O = ("2.50", "1.25", "10.00")  # USD per million: input, cached input, output
TEXT_STREAM = "openai-responses/03_stream_text.sse"
TOOLS_STREAM = "openai-responses/04_stream_reasoning_then_two_function_calls.sse"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {}}
# What Codex-style agents send: reasoning carried over encrypted, custom and shell tools, items
# the translator does not know, and fields it has never heard of.
AGENT_BODY: dict[str, Any] = {
    "model": "gpt-4o",
    "instructions": "You are a coding agent.",
    "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "Fix the test."}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA-opaque"},
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch",
         "input": "*** Begin Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done."},
    ],
    "tools": [
        {"type": "custom", "name": "apply_patch", "description": "Edit files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "local_shell"},
    ],
    "include": ["reasoning.encrypted_content"],
    "reasoning": {"effort": "medium", "summary": "auto"},
    "text": {"verbosity": "low"},
    "store": False,
    "prompt_cache_key": "session-42",
}  # fmt: skip


async def _key(http: httpx.AsyncClient, **fields: Any) -> dict[str, str]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return bearer(key["secret"])


def _cost(raw: dict[str, Any]) -> int:
    price_in, price_cached, price_out = (Decimal(p) for p in GPT_4O)
    cached = raw["input_tokens_details"]["cached_tokens"]
    usd = (raw["input_tokens"] - cached) * price_in + cached * price_cached
    return math.ceil(usd + raw["output_tokens"] * price_out)


def _blocks(raw: bytes) -> list[bytes]:
    return [block + b"\n\n" for block in raw.split(b"\n\n") if block.strip()]


def _data(block: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(block.split(b"data: ", 1)[1])
    return parsed


class TestPassthrough:
    @pytest.mark.parametrize("stream", [False, True])
    async def test_an_agents_body_reaches_openai_as_sent(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ):
        headers = await _key(http)
        response = await http.post(
            "/v1/responses", json={**AGENT_BODY, "stream": stream}, headers=headers
        )
        assert response.status_code == 200, response.text
        (seen,) = upstream.seen
        assert seen.path == "/openai/v1/responses"
        assert seen.body == {**AGENT_BODY, "stream": stream}
        assert "x-tollgate-warning" not in response.headers

    async def test_a_field_the_gateway_does_not_know_is_dropped_and_named(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        headers = await _key(http)
        body = {**AGENT_BODY, "a_field_from_next_year": {"x": 1}}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body == AGENT_BODY
        assert "a_field_from_next_year" in response.headers["x-tollgate-warning"]

    async def test_the_answer_is_openais_with_the_provider_named(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        headers = await _key(http)
        response = await http.post(
            "/v1/responses", json={"model": "gpt-4o", "input": "Hi"}, headers=headers
        )
        assert response.status_code == 200, response.text
        completed = _data(sse_events(TEXT_STREAM)[-1])["response"]
        assert response.json() == {**completed, "provider": "openai"}

    async def test_a_stream_comes_back_event_for_event(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Weather?", "stream": True, "tools": [WEATHER]}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        # Reasoning items, argument deltas, sequence numbers: all as OpenAI sent them.
        assert _blocks(response.content) == sse_events(TOOLS_STREAM)

    @pytest.mark.parametrize("stream", [False, True])
    async def test_metered_from_openais_usage(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ):
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Weather?", "stream": stream, "tools": [WEATHER]}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        (entry,) = await logs_when_seen(http, headers, 1)
        (raw,) = upstream.reported
        assert (entry["endpoint"], entry["provider"], entry["status"]) == (
            "/v1/responses", "openai", 200,
        )  # fmt: skip
        assert entry["input_tokens"] == raw["input_tokens"]
        assert entry["cached_input_tokens"] == raw["input_tokens_details"]["cached_tokens"]
        assert entry["output_tokens"] == raw["output_tokens"]
        assert entry["cost_micros"] == _cost(raw)
        assert not entry["estimated"]

    async def test_the_first_event_arrives_before_the_upstream_pause_ends(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.pause_after_first = 1.5
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Hi", "stream": True}
        timed = await timed_stream(http, "/v1/responses", body, headers)
        assert 0 <= timed.first_after < 1.0, timed.first_after
        assert timed.total >= 1.5
        assert '"response.completed"' in timed.rest[-1]


class TestGatewayEdits:
    async def test_a_cap_above_the_budget_is_clamped_in_max_output_tokens(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        headers = await _key(http, max_spend_usd=0.01)
        body = {"model": "gpt-4o", "input": "Hi", "max_output_tokens": 60_000}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        clamped = int(response.headers["x-tollgate-max-tokens-clamped"])
        assert 0 < clamped < 60_000
        assert upstream.seen[-1].body["max_output_tokens"] == clamped

    async def test_a_missing_cap_is_supplied_only_when_the_budget_clamps(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        roomy = await _key(http)
        tight = await _key(http, max_spend_usd=0.01)
        for headers in (roomy, tight):
            response = await http.post(
                "/v1/responses", json={"model": "gpt-4o", "input": "Hi"}, headers=headers
            )
            assert response.status_code == 200, response.text
        assert "max_output_tokens" not in upstream.seen[0].body
        assert 0 < upstream.seen[1].body["max_output_tokens"] < 16_384

    @pytest.mark.parametrize("stream", [False, True])
    async def test_hosted_tools_billed_per_call_are_dropped_and_named(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ):
        headers = await _key(http)
        body = {
            "model": "gpt-4o", "input": "Hi", "stream": stream,
            "tools": [{"type": "web_search_preview_2025_03_11"}, WEATHER,
                      {"type": "code_interpreter", "container": {"type": "auto"}}],
            "tool_choice": {"type": "web_search_preview_2025_03_11"},
        }  # fmt: skip
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        sent = upstream.seen[-1].body
        assert sent["tools"] == [WEATHER]
        assert "tool_choice" not in sent
        warning = response.headers["x-tollgate-warning"]
        assert "web_search_preview_2025_03_11" in warning
        assert "code_interpreter" in warning

    @pytest.mark.parametrize("store", [True, None])
    async def test_nothing_is_stored_at_openai(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, store: bool | None
    ):
        headers = await _key(http)
        body: dict[str, Any] = {"model": "gpt-4o", "input": "Hi"}
        if store is not None:
            body["store"] = store
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body["store"] is False

    @pytest.mark.parametrize(
        ("choice", "sent"),
        [
            ("required", None),  # every tool was dropped: nothing left to require
            ({"type": "allowed_tools", "mode": "required",
              "tools": [{"type": "web_search"}, {"type": "function", "name": "get_weather"}]},
             {"type": "allowed_tools", "mode": "required",
              "tools": [{"type": "function", "name": "get_weather"}]}),
        ],
    )  # fmt: skip
    async def test_a_tool_choice_keeps_only_the_tools_left(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, choice: Any, sent: Any
    ):
        headers = await _key(http)
        tools = (
            [{"type": "web_search"}] if choice == "required" else [{"type": "web_search"}, WEATHER]
        )
        body = {"model": "gpt-4o", "input": "Hi", "tools": tools, "tool_choice": choice}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body.get("tool_choice") == sent


class TestRefusals:
    @pytest.mark.parametrize(
        ("field", "value"),
        [("background", "yes"), ("conversation", "conv_1"), ("previous_response_id", "resp_1")],
    )
    async def test_what_cannot_be_metered_or_is_unknown_is_refused_before_openai(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, field: str, value: Any
    ):
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Hi", field: value}
        response = await http.post("/v1/responses", json=body, headers=headers)
        status = 400 if field == "background" else 404  # no such stored response
        assert response.status_code == status
        assert response.json()["error"]["param"] == field
        assert upstream.seen == []
        (entry,) = await logs_when_seen(http, headers, 1)
        assert (entry["status"], entry["cost_micros"]) == (status, 0)

    async def test_a_reference_to_no_stored_item_is_a_404(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        headers = await _key(http)
        given = [{"role": "user", "content": "Hi"}, {"type": "item_reference", "id": "msg_1"}]
        body = {"model": "gpt-4o", "input": given}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "input[1].id"
        assert upstream.seen == []

    async def test_background_false_is_fine(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Hi", "background": False}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert upstream.seen[-1].body["background"] is False


class TestFailures:
    @pytest.mark.parametrize("mode", ["drop", "midstream_error"])
    async def test_a_failed_stream_ends_as_the_api_ends_one_and_bills_what_was_produced(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, mode: str
    ):
        upstream.mode = mode
        headers = await _key(http)
        body = {"model": "gpt-4o", "input": "Hi", "stream": True}
        response = await http.post("/v1/responses", json=body, headers=headers)
        assert response.status_code == 200
        blocks = _blocks(response.content)
        relayed = sse_events(TEXT_STREAM)[:5]  # up to and including the first delta
        assert blocks[:5] == relayed
        error, failed = (_data(block) for block in blocks[5:])
        assert error["type"] == "error"
        assert error["message"]
        assert failed["type"] == "response.failed"
        assert failed["response"]["status"] == "failed"
        assert failed["response"]["id"] == _data(relayed[0])["response"]["id"]
        # Numbered on from the last event relayed, as the SDKs expect.
        assert [error["sequence_number"], failed["sequence_number"]] == [5, 6]
        (entry,) = await logs_when_seen(http, headers, 1)
        assert entry["status"] == 502
        assert entry["output_tokens"] > 0  # the delta relayed
        assert entry["input_tokens"] > 0
        assert entry["estimated"]

    async def test_a_cut_off_agent_stream_is_billed_for_its_prompt(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        """The translator cannot read an agent's custom tool calls: the prompt is estimated
        from the body's JSON, not taken as nothing."""
        upstream.mode = "drop"
        headers = await _key(http)
        response = await http.post(
            "/v1/responses", json={**AGENT_BODY, "stream": True}, headers=headers
        )
        assert response.status_code == 200
        (entry,) = await logs_when_seen(http, headers, 1)
        assert entry["status"] == 502
        assert entry["estimated"]
        assert entry["input_tokens"] > 50  # instructions, four items, two tools
        assert entry["output_tokens"] > 0

    async def test_upstream_errors_keep_their_status(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode = "400"
        headers = await _key(http)
        response = await http.post(
            "/v1/responses", json={"model": "gpt-4o", "input": "Hi"}, headers=headers
        )
        assert response.status_code == 400
        assert "maximum context length" in response.json()["error"]["message"]
