"""`/v1/responses` for models Tollgate answers itself (Claude, Gemini, DeepSeek), through a real
server to the fake upstreams: every answer and every streamed event against the JSON Schema of
the published Responses object (tests/fixtures/responses_schema.json), the request repeated as
OpenAI repeats it, one id scheme, and the official OpenAI SDK reading it all without losing a
field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.factories.tenants import bearer, create_key, create_tenant
from tests.responses_shape import check_ids, check_response, check_stream, kept, sse_data

MODELS = ["claude-sonnet-4", "gemini-2.5-flash", "deepseek-chat"]
# A test key's model is answered by the built-in mock, through the same translation.
MOCK = "mock:gpt-4o"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": WEATHER, "strict": False}]  # fmt: skip
RESULT = '{"temp_c": 21}'
# What a response repeats of a request that sets nothing but its model and input (and tools).
DEFAULTS: dict[str, Any] = {
    "background": False, "frequency_penalty": 0.0, "instructions": None,
    "max_output_tokens": None, "max_tool_calls": None, "parallel_tool_calls": True,
    "presence_penalty": 0.0, "previous_response_id": None, "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
    "service_tier": "default", "store": True, "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto",
    "tools": [], "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled", "user": None,
    "metadata": {},
}  # fmt: skip
ANSWER_SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}}}
EVERYTHING = {
    "instructions": "Be brief.", "max_output_tokens": 300, "max_tool_calls": 4,
    "parallel_tool_calls": False, "prompt_cache_key": "weather-v1",
    "reasoning": {"effort": "low", "summary": "auto"}, "safety_identifier": "user-42",
    "store": False, "temperature": 0.25, "top_p": 0.5,
    "text": {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER_SCHEMA,
                        "strict": True}, "verbosity": "low"},
    "tool_choice": "required", "tools": [{"type": "function", "name": "get_weather",
                                         "parameters": WEATHER}],
    "top_logprobs": 2, "truncation": "auto", "user": "u_1", "metadata": {"order": "42"},
}  # fmt: skip
EVERYTHING_REPEATED = {
    **DEFAULTS, **EVERYTHING,
    "text": {"format": {"type": "json_schema", "description": None, "name": "answer",
                        "schema": ANSWER_SCHEMA, "strict": True}, "verbosity": "low"},
    "tools": [{"type": "function", "name": "get_weather", "description": None,
               "parameters": WEATHER, "strict": True}],
}  # fmt: skip


def repeated(response: dict[str, Any]) -> dict[str, Any]:
    return {k: response[k] for k in DEFAULTS}


async def _secret(http: httpx.AsyncClient, model: str) -> tuple[str, str]:
    """A key's secret for `model` (a test key for the mock), and the model name to ask for."""
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, test=model == MOCK)
    return key["secret"], model.removeprefix("mock:")


async def _headers(http: httpx.AsyncClient) -> dict[str, str]:
    tenant = await create_tenant(http)
    return bearer((await create_key(http, tenant))["secret"])


async def _ask(
    http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], stream: bool
) -> dict[str, Any]:
    """The response object, checked: the body of a plain answer, or the final response of a
    stream whose every event was checked."""
    response = await http.post("/v1/responses", json={**body, "stream": stream}, headers=headers)
    assert response.status_code == 200, response.text
    body_of = check_stream if stream else check_response
    final = body_of(sse_data(response.content) if stream else response.json())
    check_ids(final)
    assert final["status"] == "completed"
    assert final["completed_at"] >= final["created_at"]
    usage = final["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    return final


def _calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


def _text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


class TestShape:
    @pytest.mark.parametrize("model", [*MODELS, MOCK])
    async def test_every_answer_and_event_has_the_published_shape(
        self, every_http: httpx.AsyncClient, model: str
    ):
        secret, model = await _secret(every_http, model)
        headers = bearer(secret)
        said = [{"role": "user", "content": "Hello"}]
        for stream in (False, True):
            text = await _ask(every_http, headers, {"model": model, "input": said}, stream)
            assert repeated(text) == DEFAULTS
            assert _text(text)
            assert _calls(text) == []

            called = await _ask(
                every_http, headers, {"model": model, "input": said, "tools": TOOLS}, stream
            )
            assert repeated(called) == {**DEFAULTS, "tools": TOOLS}
            calls = _calls(called)
            assert calls
            assert {call["name"] for call in calls} <= {"get_weather", "get_stock_price"}
            assert text["id"] != called["id"]

            history: list[dict[str, Any]] = [*said]
            for call in calls:  # the round trip: each call and its result sent back
                history.append({"type": "function_call", "call_id": call["call_id"],
                                "name": call["name"], "arguments": call["arguments"]})  # fmt: skip
                history.append(
                    {"type": "function_call_output", "call_id": call["call_id"], "output": RESULT}
                )
            answered = await _ask(
                every_http, headers, {"model": model, "input": history, "tools": TOOLS}, stream
            )
            assert repeated(answered) == {**DEFAULTS, "tools": TOOLS}
            assert _text(answered)
            assert _calls(answered) == []

    @pytest.mark.parametrize("model", MODELS)
    async def test_the_request_is_repeated_as_sent(self, every_http: httpx.AsyncClient, model: str):
        headers = await _headers(every_http)
        for stream in (False, True):
            body = {"model": model, "input": "What is the weather in Paris?", **EVERYTHING}
            response = await _ask(every_http, headers, body, stream)
            assert repeated(response) == EVERYTHING_REPEATED

    @pytest.mark.parametrize("model", MODELS)
    async def test_a_chained_response_names_what_it_continues(
        self, every_http: httpx.AsyncClient, model: str
    ):
        headers = await _headers(every_http)
        first = await _ask(every_http, headers, {"model": model, "input": "Hello"}, False)
        assert first["previous_response_id"] is None
        assert "conversation" not in first
        for stream in (False, True):
            body = {"model": model, "input": "And then?", "previous_response_id": first["id"]}
            chained = await _ask(every_http, headers, body, stream)
            assert chained["previous_response_id"] == first["id"]
            assert chained["id"] != first["id"]
        made = await every_http.post("/v1/conversations", json={}, headers=headers)
        assert made.status_code == 200, made.text
        conversation = made.json()["id"]
        for stream in (False, True):
            body = {"model": model, "input": "Hi", "conversation": conversation}
            held = await _ask(every_http, headers, body, stream)
            assert held["conversation"] == {"id": conversation}
            assert held["previous_response_id"] is None


# The official SDK ---------------------------------------------------------------------------


class _Recorded(httpx.AsyncByteStream):
    def __init__(self, inner: Any, into: bytearray) -> None:
        self._inner = inner
        self._into = into

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._into.extend(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class Recording(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps a copy of every response body the SDK reads."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = bytearray()
        self.bodies.append(body)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Recorded(response.stream, body),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class TestOpenAISDK:
    @pytest.mark.parametrize("model", [*MODELS, MOCK])
    async def test_reads_every_field_plain_and_streamed(
        self, every_http: httpx.AsyncClient, every_provider_url: str, model: str
    ):
        key, model = await _secret(every_http, model)
        recording = Recording()
        async with (
            httpx.AsyncClient(transport=recording, timeout=30) as http,
            openai.AsyncOpenAI(
                api_key=key,
                base_url=f"{every_provider_url}/v1",
                http_client=http,  # type: ignore[arg-type]  # httpx clients are taken as such
                max_retries=0,
            ) as client,
        ):
            for tools in ([], TOOLS):
                raw = await client.responses.with_raw_response.create(
                    model=model,
                    input="Hello",
                    tools=tools,  # type: ignore[arg-type]
                    temperature=0.5,
                )
                wire = check_response(raw.http_response.json())
                parsed = raw.parse()
                kept(wire, parsed.to_dict())
                assert parsed.temperature == 0.5
                assert parsed.completed_at is not None
                assert parsed.id.startswith("resp_")

                async with client.responses.stream(
                    model=model,
                    input="Hello",
                    tools=tools,  # type: ignore[arg-type]
                    max_output_tokens=300,
                ) as stream:
                    final = await stream.get_final_response()
                events = sse_data(bytes(recording.bodies[-1]))
                completed = check_stream(events)
                check_ids(completed)
                kept(completed, final.to_dict())
                assert final.id == completed["id"]
                assert final.max_output_tokens == 300
                if tools:
                    assert [item.type for item in final.output][-1] == "function_call"
                    assert final.tools[0].type == "function"
                    assert final.tools[0].name == "get_weather"
                else:
                    assert final.output_text
