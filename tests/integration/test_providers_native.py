"""The Anthropic and Gemini fakes speak the real formats (the official Anthropic SDK and the
translators read them), and the native providers reach them over loopback HTTP with the right
auth and map every failure into the error tree. No database is involved."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic as anthropic_sdk
import httpx
import pytest

from api.errors import (
    RateLimited,
    UpstreamClientError,
    UpstreamError,
    UpstreamUnavailable,
)
from api.gateway.pricing import Usage
from api.gateway.providers.anthropic import AnthropicProvider
from api.gateway.providers.base import UpstreamRequest
from api.gateway.providers.gemini import GeminiProvider
from api.gateway.providers.registry import ProviderRegistry
from api.gateway.translate import (
    anthropic,
    anthropic_stream,
    gemini,
    gemini_stream,
    ir,
    openai_chat,
    openai_chat_stream,
)
from api.gateway.translate.fields import upstream_body
from api.kit.http1 import HTTPClient, Timeouts
from api.settings import Settings
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.unit.translate_support import chat_final, decode, encode, events_of

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}
CHAT_TOOLS = {
    "model": "m",
    "messages": [{"role": "user", "content": "Weather in Lisbon?"}],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"]}}],
}  # fmt: skip


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_gemini() -> Iterator[FakeGemini]:
    server = FakeGemini()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh(fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini) -> None:
    fake_anthropic.reset()
    fake_gemini.reset()


def sdk(fake: FakeAnthropic) -> anthropic_sdk.Anthropic:
    return anthropic_sdk.Anthropic(
        base_url=fake.base_url, api_key=anthropic_upstream.API_KEY, max_retries=0
    )


class TestFakeAnthropicWithTheSDK:
    def test_text_cache_usage_and_headers(self, fake_anthropic: FakeAnthropic):
        system: Any = [{"type": "text", "text": "You are terse.",
                        "cache_control": {"type": "ephemeral"}}]  # fmt: skip
        with sdk(fake_anthropic) as client:
            first = client.messages.create(
                model="claude-test", max_tokens=100, system=system,
                messages=[{"role": "user", "content": "Hello there"}],
            )  # fmt: skip
            second = client.messages.create(
                model="claude-test", max_tokens=100, system=system,
                messages=[{"role": "user", "content": "Hello there"}],
            )  # fmt: skip
        assert first.content[0].type == "text"
        assert first.content[0].text == "You said: Hello there"
        assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
            3,
            0,
        )
        assert (second.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens) == (
            0,
            3,
        )
        assert "anthropic-version" in fake_anthropic.seen[-1].headers

    def test_streamed_tool_use(self, fake_anthropic: FakeAnthropic):
        with sdk(fake_anthropic) as client, client.messages.stream(
            model="claude-test", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Weather in Lisbon?"}],
        ) as stream:  # fmt: skip
            message = stream.get_final_message()
        assert message.stop_reason == "tool_use"
        [call] = message.content
        assert call.type == "tool_use"
        assert (call.name, call.input) == ("get_weather", {"city": "example", "unit": "c"})

    def test_tool_result_is_quoted(self, fake_anthropic: FakeAnthropic):
        with sdk(fake_anthropic) as client:
            message = client.messages.create(
                model="claude-test", max_tokens=100, tools=[WEATHER],  # type: ignore[list-item]
                messages=[
                    {"role": "user", "content": "Weather in Lisbon?"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                       "name": "get_weather", "input": {}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                  "content": "21C and sunny"}]},
                ],
            )  # fmt: skip
        assert message.content[0].type == "text"
        assert message.content[0].text == "The tool said: 21C and sunny"

    def test_thinking_is_signed(self, fake_anthropic: FakeAnthropic):
        with sdk(fake_anthropic) as client:
            message = client.messages.create(
                model="claude-test", max_tokens=2048,
                thinking={"type": "enabled", "budget_tokens": 1024},
                messages=[{"role": "user", "content": "27 * 453?"}],
            )  # fmt: skip
        assert message.content[0].type == "thinking"
        assert message.content[0].signature == anthropic_upstream.SIGNATURE

    @pytest.mark.parametrize(
        ("mode", "error"),
        [("529", anthropic_sdk.OverloadedError), ("429", anthropic_sdk.RateLimitError),
         ("500", anthropic_sdk.InternalServerError), ("400", anthropic_sdk.BadRequestError),
         ("401", anthropic_sdk.AuthenticationError)],
    )  # fmt: skip
    def test_failures(self, fake_anthropic: FakeAnthropic, mode: str, error: type[Exception]):
        fake_anthropic.mode = mode
        with sdk(fake_anthropic) as client, pytest.raises(error):
            client.messages.create(model="claude-test", max_tokens=10,
                                   messages=[{"role": "user", "content": "hi"}])  # fmt: skip

    def test_midstream_error(self, fake_anthropic: FakeAnthropic):
        fake_anthropic.mode = "midstream_error"
        with sdk(fake_anthropic) as client, client.messages.stream(
            model="claude-test", max_tokens=10,
            messages=[{"role": "user", "content": "Tell me a long story"}],
        ) as stream, pytest.raises(anthropic_sdk.APIStatusError) as caught:  # fmt: skip
            stream.get_final_message()
        assert "overloaded" in str(caught.value).lower()


class TestFakeGemini:
    def test_text_and_usage(self, fake_gemini: FakeGemini):
        url = fake_gemini.base_url + gemini.request_path("gemini-2.5-flash", stream=False)
        body = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
        answer = httpx.post(url, json=body, headers={"x-goog-api-key": gemini_upstream.API_KEY})
        response = gemini.parse_response(answer.json())
        assert response.parts == [ir.Text("You said: Hello there")]
        assert response.usage == Usage(2, 0, 4 + gemini_upstream.THOUGHTS,
                                       gemini_upstream.THOUGHTS)  # fmt: skip

    def test_stream_and_json_array(self, fake_gemini: FakeGemini):
        body = {"contents": [{"role": "user", "parts": [{"text": "one two three four five"}]}]}
        headers = {"x-goog-api-key": gemini_upstream.API_KEY}
        url = fake_gemini.base_url + gemini.request_path("gemini-2.5-flash", stream=True)
        raw = httpx.post(url, json=body, headers=headers).content
        assert raw.count(b"\r\n\r\n") == 3
        events = decode(gemini_stream.StreamDecoder(), events_of(raw))
        assert "".join(e.text for e in events if isinstance(e, ir.TextDelta)) == (
            "You said: one two three four five"
        )
        assert isinstance(events[-1], ir.MessageEnd)
        plain = httpx.post(url.split("?")[0], json=body, headers=headers).json()
        assert isinstance(plain, list)
        assert len(plain) == 3

    def test_function_call_then_result(self, fake_gemini: FakeGemini):
        request = openai_chat.parse_request(CHAT_TOOLS)
        url = fake_gemini.base_url + gemini.request_path("gemini-2.5-flash", stream=False)
        headers = {"x-goog-api-key": gemini_upstream.API_KEY}
        first = gemini.parse_response(
            httpx.post(url, json=gemini.render_request(request), headers=headers).json()
        )
        [call] = first.parts
        assert isinstance(call, ir.ToolCall)
        assert call.name == "get_weather"
        assert json.loads(call.arguments) == {"city": "example", "unit": "c"}
        assert call.signature == gemini_upstream.SIGNATURE
        result = ir.ToolResult(call.id, [ir.Text("sunny")])
        request.messages += [ir.Message("assistant", [call]), ir.Message("user", [result])]
        sent = gemini.render_request(request)
        assert sent["contents"][1]["parts"][0]["thoughtSignature"] == gemini_upstream.SIGNATURE
        second = gemini.parse_response(httpx.post(url, json=sent, headers=headers).json())
        assert second.parts == [ir.Text('The function said: {"result": "sunny"}')]


@pytest.fixture
async def session() -> AsyncIterator[HTTPClient]:
    client = HTTPClient()
    yield client
    await client.close()


async def call(provider: Any, request: UpstreamRequest) -> None:
    if request.stream:
        (await provider.open_stream(request)).close()
    else:
        await provider.send(request)


async def drain(stream: Any, decoder: Any) -> None:
    async for event in stream.events():
        decoder.feed(event)


def _timeouts() -> tuple[Timeouts, Timeouts]:
    return Timeouts(connect=10, read=10, total=10), Timeouts(connect=10, read=10)


def claude(fake: FakeAnthropic, session: HTTPClient, key: str = "") -> AnthropicProvider:
    return AnthropicProvider("anthropic", fake.base_url, key or anthropic_upstream.API_KEY,
                             session, *_timeouts())  # fmt: skip


def google(fake: FakeGemini, session: HTTPClient, key: str = "") -> GeminiProvider:
    return GeminiProvider("gemini", fake.base_url, key or gemini_upstream.API_KEY, session,
                          *_timeouts())  # fmt: skip


class TestAnthropicProvider:
    async def test_send_translated_request(self, fake_anthropic, session):
        request = openai_chat.parse_request(CHAT_TOOLS)
        body = anthropic.render_request(request)
        provider = claude(fake_anthropic, session)
        answer = await provider.send(UpstreamRequest(
            "/v1/messages", body, stream=False,
            headers={"anthropic-beta": "token-efficient-tools-2025-02-19"},
        ))  # fmt: skip
        response = upstream_body(anthropic.parse_response, json.loads(answer.body), "anthropic")
        rendered = openai_chat.render_response(response)
        assert rendered["choices"][0]["finish_reason"] == "tool_calls"
        assert rendered["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == (
            "get_weather"
        )
        seen = fake_anthropic.seen[-1].headers
        assert seen["anthropic-beta"] == "token-efficient-tools-2025-02-19"
        assert seen["anthropic-version"] == "2023-06-01"
        assert provider.dialect == "anthropic"

    async def test_stream_re_encoded_for_a_chat_client(self, fake_anthropic, session):
        body = anthropic.render_request(openai_chat.parse_request({**CHAT_TOOLS, "stream": True}))
        stream = await claude(fake_anthropic, session).open_stream(
            UpstreamRequest("/v1/messages", body, stream=True)
        )
        decoder, encoder = anthropic_stream.StreamDecoder(), openai_chat_stream.StreamEncoder()
        out = b""
        async for event in stream.events():
            out += b"".join(encoder.feed(e) for e in decoder.feed(event))
        out += b"".join(encoder.feed(e) for e in decoder.close())
        stream.close()
        final = chat_final(out)
        assert final.choices[0].finish_reason == "tool_calls"
        calls = final.choices[0].message.tool_calls or []
        assert json.loads(calls[0].function.arguments) == {"city": "example", "unit": "c"}  # type: ignore[union-attr]
        assert decoder.usage.input_tokens == fake_anthropic.reported[-1]["input_tokens"]

    @pytest.mark.parametrize(
        ("mode", "error", "retry_after"),
        [("529", UpstreamUnavailable, None), ("429", RateLimited, "14"),
         ("500", UpstreamError, None), ("400", UpstreamClientError, None),
         ("401", UpstreamError, None)],
    )  # fmt: skip
    async def test_errors(self, fake_anthropic, session, mode, error, retry_after):
        fake_anthropic.mode = mode
        body = {"model": "claude-sonnet-4-20250514", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        for stream in (False, True):
            provider = claude(fake_anthropic, session)
            with pytest.raises(error) as caught:
                await call(provider, UpstreamRequest("/v1/messages", body, stream))
            assert type(caught.value) is error
            assert caught.value.headers.get("retry-after") == retry_after
        if mode == "400":
            assert caught.value.status_code == 400
            assert caught.value.public_code == "invalid_request_error"
            assert "prompt is too long" in caught.value.message

    async def test_wrong_key_is_the_gateways_problem(self, fake_anthropic, session):
        provider = claude(fake_anthropic, session, key="wrong")
        with pytest.raises(UpstreamError):
            await provider.send(UpstreamRequest("/v1/messages", {}, False))

    async def test_dropped_stream(self, fake_anthropic, session):
        fake_anthropic.mode = "drop"
        body = anthropic.render_request(openai_chat.parse_request({**CHAT_TOOLS, "stream": True}))
        stream = await claude(fake_anthropic, session).open_stream(
            UpstreamRequest("/v1/messages", body, stream=True)
        )
        decoder = anthropic_stream.StreamDecoder()
        with pytest.raises(UpstreamError):
            await drain(stream, decoder)
        stream.close()
        assert decoder.usage.input_tokens > 0  # metered from message_start
        assert decoder.close() == []

    async def test_midstream_error_becomes_a_stream_error(self, fake_anthropic, session):
        fake_anthropic.mode = "midstream_error"
        body = {"model": "claude-sonnet-4-20250514", "max_tokens": 5, "stream": True,
                "messages": [{"role": "user", "content": "hi there"}]}  # fmt: skip
        stream = await claude(fake_anthropic, session).open_stream(
            UpstreamRequest("/v1/messages", body, stream=True)
        )
        decoder, encoder = anthropic_stream.StreamDecoder(), openai_chat_stream.StreamEncoder()
        events = [e async for raw in stream.events() for e in decoder.feed(raw)]
        stream.close()
        assert events[-1] == ir.StreamError("overloaded", "Overloaded")
        assert b'"code":"overloaded"' in encode(encoder, events)


class TestGeminiProvider:
    async def test_stream_adds_alt_sse_and_translates(self, fake_gemini, session):
        request = openai_chat.parse_request({**CHAT_TOOLS, "stream": True})
        path = gemini.request_path("gemini-2.5-flash", stream=False).replace(
            "generateContent", "streamGenerateContent"
        )
        stream = await google(fake_gemini, session).open_stream(
            UpstreamRequest(path, gemini.render_request(request), stream=True)
        )
        decoder, encoder = gemini_stream.StreamDecoder(), anthropic_stream.StreamEncoder()
        out = b""
        async for event in stream.events():
            out += b"".join(encoder.feed(e) for e in decoder.feed(event))
        out += b"".join(encoder.feed(e) for e in decoder.close())
        stream.close()
        assert fake_gemini.seen[-1].query == {"alt": "sse"}
        assert fake_gemini.seen[-1].headers["x-goog-api-key"] == gemini_upstream.API_KEY
        assert b'"stop_reason":"tool_use"' in out
        assert decoder.usage.reasoning_tokens == gemini_upstream.THOUGHTS

    async def test_send(self, fake_gemini, session):
        body = gemini.render_request(openai_chat.parse_request(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}))  # fmt: skip
        answer = await google(fake_gemini, session).send(
            UpstreamRequest(gemini.request_path("gemini-2.5-flash", stream=False), body, False)
        )
        response = upstream_body(gemini.parse_response, json.loads(answer.body), "gemini")
        assert response.parts == [ir.Text("You said: hi")]

    @pytest.mark.parametrize(
        ("mode", "error", "retry_after"),
        [("429", RateLimited, "27"), ("503", UpstreamUnavailable, None),
         ("500", UpstreamError, None), ("400", UpstreamError, None)],
    )  # fmt: skip
    async def test_errors(self, fake_gemini, session, mode, error, retry_after):
        fake_gemini.mode = mode
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        for stream in (False, True):
            provider = google(fake_gemini, session)
            path = gemini.request_path("gemini-2.5-flash", stream=stream)
            with pytest.raises(error) as caught:
                await call(provider, UpstreamRequest(path, body, stream))
            assert type(caught.value) is error
            assert caught.value.headers.get("retry-after") == retry_after

    async def test_client_error_keeps_googles_status(self, fake_gemini, session):
        path = gemini.request_path("gemini-2.5-flash", stream=False)
        with pytest.raises(UpstreamClientError) as caught:
            await google(fake_gemini, session).send(UpstreamRequest(path, {"contents": []}, False))
        assert caught.value.public_code == "INVALID_ARGUMENT"
        assert caught.value.status_code == 400

    async def test_dropped_stream(self, fake_gemini, session):
        fake_gemini.mode = "drop"
        body = {"contents": [{"role": "user", "parts": [{"text": "a b c d e f g h"}]}]}
        path = gemini.request_path("gemini-2.5-flash", stream=True)
        stream = await google(fake_gemini, session).open_stream(UpstreamRequest(path, body, True))
        decoder = gemini_stream.StreamDecoder()
        with pytest.raises(UpstreamError):
            await drain(stream, decoder)
        stream.close()
        assert decoder.close() == []  # no finishReason: the pipeline meters decoder.usage
        assert decoder.usage.input_tokens > 0


class TestRegistry:
    async def test_native_providers_are_registered_by_dialect(self, session):
        settings = Settings(
            anthropic_api_key="sk-ant-x", gemini_api_key="AIza-x",  # type: ignore[arg-type]
            openai_api_key="sk-x",  # type: ignore[arg-type]
        )  # fmt: skip
        registry = ProviderRegistry(settings, session)
        assert {"anthropic", "gemini", "openai"} <= registry.available()
        everything = ("openai", "anthropic", "gemini")
        assert registry.get("anthropic", test=False, dialects=everything).dialect == "anthropic"
        assert registry.get("gemini", test=False, dialects=everything).dialect == "gemini"
        assert registry.get("openai", test=False).dialect == "openai"
        # An endpoint that cannot translate yet refuses instead of sending the wrong format.
        with pytest.raises(Exception, match="not served by this endpoint"):
            registry.get("anthropic", test=False)
