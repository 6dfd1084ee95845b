"""The official `openai` SDK against a running Tollgate and the fake upstreams (SPEC §5.2)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.factories.chat import HELLO, WEATHER_TOOL
from tests.factories.tenants import create_key, create_tenant
from tests.fakes.upstream import FakeUpstream

WEATHER_TOOLS = [WEATHER_TOOL]


@pytest.fixture
async def secrets(http: httpx.AsyncClient) -> dict[str, str]:
    tenant = await create_tenant(http)
    live = await create_key(http, tenant, name="live")
    test = await create_key(http, tenant, name="test", test=True)
    capped = await create_key(http, tenant, name="capped", max_spend_usd=0)
    return {"live": live["secret"], "test": test["secret"], "capped": capped["secret"]}


def _client(gateway_url: str, key: str, **options: object) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{gateway_url}/v1", **options)


class TestSync:
    def test_plain_completion(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            completion = client.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert completion.choices[0].message.content.startswith("The function is O(n log n)")
        assert completion.usage is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 2304
        assert (completion.model_extra or {})["provider"] == "openai"

    def test_streaming_text(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
            chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello! How can I help you today?"
        assert all(chunk.usage is None for chunk in chunks)

    def test_streaming_with_usage(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            chunks = list(
                client.chat.completions.create(
                    model="gpt-4o", messages=HELLO, stream=True,
                    stream_options={"include_usage": True},
                )
            )  # fmt: skip
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 29

    def test_parallel_tool_calls(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            completion = client.chat.completions.create(
                model="gpt-4o",
                messages=HELLO,
                tools=WEATHER_TOOLS,
            )
        calls = completion.choices[0].message.tool_calls or []
        assert completion.choices[0].finish_reason == "tool_calls"
        assert [call.function.name for call in calls] == ["get_weather", "get_stock_price"]
        assert json.loads(calls[1].function.arguments) == {"ticker": "MSFT", "exchange": "NASDAQ"}

    def test_streamed_tool_call_arguments_reassemble(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with (
            _client(gateway_url, secrets["live"]) as client,
            client.chat.completions.stream(
                model="gpt-4o",
                messages=HELLO,
                tools=WEATHER_TOOLS,
            ) as stream,
        ):
            final = stream.get_final_completion()
        calls = final.choices[0].message.tool_calls or []
        assert len(calls) == 2
        arguments = [json.loads(call.function.arguments) for call in calls]
        assert arguments[0]["city"] == "Lisbon"
        assert "ticker" in arguments[1]

    def test_deepseek_reasoning_stream(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            chunks = list(
                client.chat.completions.create(
                    model="deepseek-reasoner", messages=HELLO, stream=True
                )
            )
        reasoning = "".join(
            (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks
        )
        assert reasoning.startswith("Compare")

    def test_models_list(self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream):
        with _client(gateway_url, secrets["live"]) as client:
            ids = [model.id for model in client.models.list()]
        assert "gpt-4o" in ids
        assert "deepseek-chat" in ids


class TestAsync:
    async def test_plain_and_streaming(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        async with openai.AsyncOpenAI(
            api_key=secrets["live"], base_url=f"{gateway_url}/v1"
        ) as client:
            completion = await client.chat.completions.create(model="deepseek-chat", messages=HELLO)
            assert completion.usage is not None
            assert completion.usage.prompt_tokens == 1854
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=HELLO, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Hello! How can I help you today?"


class TestTestKey:
    def test_mock_plain_stream_and_tools(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["test"]) as client:
            plain = client.chat.completions.create(model="claude-sonnet-4", messages=HELLO)
            streamed = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
                if c.choices
            )
            tools = client.chat.completions.create(
                model="gpt-4o", messages=HELLO, tools=WEATHER_TOOLS
            )
        assert plain.choices[0].message.content == streamed
        call = (tools.choices[0].message.tool_calls or [])[0]
        assert json.loads(call.function.arguments) == {"city": "example"}
        assert upstream.seen == []


class TestErrors:
    def test_client_errors_are_typed_and_not_retried(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"]) as client:
            with pytest.raises(openai.BadRequestError) as bad:
                client.chat.completions.create(model="no-such-model", messages=HELLO)
            assert bad.value.code == "invalid_model"
        with _client(gateway_url, "qlk_live_" + "0" * 43, max_retries=5) as client:
            started = time.monotonic()
            with pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model="gpt-4o", messages=HELLO)
            assert time.monotonic() - started < 1.0  # x-should-retry: false stops the SDK retrying
        with _client(gateway_url, secrets["capped"], max_retries=5) as client:
            with pytest.raises(openai.APIStatusError) as capped:
                client.chat.completions.create(model="gpt-4o", messages=HELLO)
            assert capped.value.status_code == 402
        assert upstream.seen == []

    def test_upstream_rate_limit_and_midstream_failure(
        self, gateway_url: str, secrets: dict[str, str], upstream: FakeUpstream
    ):
        with _client(gateway_url, secrets["live"], max_retries=0) as client:
            upstream.mode = "drop"
            stream = client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True)
            with pytest.raises(openai.APIError):
                list(stream)
            # Last: a 429 cools the gateway's only account down for the `retry-after` it sent.
            upstream.mode = "429"
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="gpt-4o", messages=HELLO)
