"""Every model from every endpoint (SPEC §5.2), through the official SDKs.

Three client endpoints (`/v1/chat/completions` with the `openai` SDK, `/v1/responses` with the
`openai` SDK, `/v1/messages` with the `anthropic` SDK) x five providers (OpenAI, DeepSeek,
Anthropic, Gemini against their fakes, and the built-in mock for test keys) x {plain, streaming
through the SDKs' stream helpers} x {text, a tool call and its round-trip}. Each cell checks the
content, the tool calls' names and arguments, the stop reason, and that what was metered is the
provider's reported usage, normalised (written out here independently) and priced. An OpenAI
model on `/v1/responses` is answered by the fake's Responses API, the others by translation.

One gateway (PostgreSQL + Redis) serves the whole module; each cell has its own key, so its
log holds exactly its own calls.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings
from tests.conftest import SECRET_KEY, truncate_all
from tests.factories.tenants import ADMIN_TOKEN
from tests.fakes import anthropic_upstream, gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream

PROMPT = "Hello"
RESULT = '{"temp_c": 21}'
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
STOCK_SCHEMA = {
    "type": "object",
    "properties": {"ticker": {"type": "string"}},
    "required": ["ticker"],
}
TOOLS = [("get_weather", "Weather for a city", WEATHER_SCHEMA),
         ("get_stock_price", "A stock's price", STOCK_SCHEMA)]  # fmt: skip


@dataclass(frozen=True)
class Provider:
    name: str
    model: str
    prices: tuple[str, str, str, str]  # USD per million: input, cached input, output, cache write
    text: tuple[str, str]  # how the first answer starts: (plain, streamed)
    tool_names: tuple[str, ...]
    first_argument: tuple[str, str]  # the first call's (argument, value)
    answers_result: bool  # whether the round-trip's answer quotes the tool result


FIXED_TOOLS = ("get_weather", "get_stock_price")  # the recorded OpenAI calls
PROVIDERS = {
    p.name: p
    for p in (
        Provider("openai", "gpt-4o", ("2.50", "1.25", "10.00", "2.50"),
                 ("The function is O(n log n)", "Hello! How can I help you today?"),
                 FIXED_TOOLS, ("city", "Lisbon"), False),
        Provider("deepseek", "deepseek-chat", ("0.28", "0.028", "0.42", "0.28"),
                 ("Sure — here is the revised paragraph", "9.11 is smaller than 9.8."),
                 FIXED_TOOLS, ("city", "Lisbon"), False),
        Provider("anthropic", "claude-sonnet-4", ("3.00", "0.30", "15.00", "3.75"),
                 (f"You said: {PROMPT}", f"You said: {PROMPT}"),
                 ("get_weather",), ("city", "example"), True),
        Provider("gemini", "gemini-2.5-flash", ("0.30", "0.03", "2.50", "0.30"),
                 (f"You said: {PROMPT}", f"You said: {PROMPT}"),
                 ("get_weather",), ("city", "example"), True),
        Provider("mock", "gpt-4o", ("0", "0", "0", "0"),
                 ("This is a mock response", "This is a mock response"),
                 ("get_weather",), ("city", "example"), False),
    )
}  # fmt: skip
# `/v1/responses` reaches OpenAI's own Responses API (the recorded Responses streams).
NATIVE_RESPONSES = {
    "openai": Provider("openai", "gpt-4o", ("2.50", "1.25", "10.00", "2.50"),
                       ("Hi there! How can I help?", "Hi there! How can I help?"),
                       ("get_weather", "get_weather"), ("location", "Paris, France"), False),
}  # fmt: skip


@dataclass
class Fakes:
    openai: FakeUpstream
    anthropic: FakeAnthropic
    gemini: FakeGemini

    def reset(self) -> None:
        self.openai.reset()
        self.anthropic.reset()
        self.gemini.reset()

    def reported(self, provider: str) -> list[dict[str, Any]]:
        if provider in ("openai", "deepseek"):
            return self.openai.reported
        return self.anthropic.reported if provider == "anthropic" else self.gemini.reported


@dataclass(frozen=True)
class Gateway:
    url: str
    master: str


@pytest.fixture(scope="module")
def fakes(fake_upstream_server: FakeUpstream) -> Iterator[Fakes]:
    with FakeAnthropic() as claude, FakeGemini() as gemini:
        assert isinstance(claude, FakeAnthropic)
        assert isinstance(gemini, FakeGemini)
        yield Fakes(fake_upstream_server, claude, gemini)


@pytest.fixture(scope="module")
def gateway(
    fakes: Fakes, postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("matrix") / "data",
        database_url=postgres_url,
        redis_url=redis_url,
        secret_key=SECRET_KEY,
        admin_token=ADMIN_TOKEN,
        openai_api_key=SecretStr("sk-operator-openai"),
        openai_base_url=fakes.openai.openai_base_url,
        deepseek_api_key=SecretStr("sk-operator-deepseek"),
        deepseek_base_url=fakes.openai.deepseek_base_url,
        anthropic_api_key=SecretStr(anthropic_upstream.API_KEY),
        anthropic_base_url=fakes.anthropic.base_url,
        gemini_api_key=SecretStr(gemini_upstream.API_KEY),
        gemini_base_url=fakes.gemini.base_url,
    )
    with serve_in_thread(create_app(settings)) as url:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tenant = httpx.post(f"{url}/admin/tenants", json={"name": "Matrix"}, headers=admin)
        assert tenant.status_code == 201, tenant.text
        yield Gateway(url, tenant.json()["master_key"])
    truncate_all(postgres_url)


@pytest.fixture
def cell_key(gateway: Gateway, fakes: Fakes, request: pytest.FixtureRequest) -> str:
    fakes.reset()
    provider = request.node.callspec.params["provider"]
    response = httpx.post(
        f"{gateway.url}/v1/keys",
        json={"name": request.node.name[:100], "test": provider == "mock"},
        headers={"Authorization": f"Bearer {gateway.master}"},
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


# Each client: returns (first answer, round-trip answer or None) as `Answer`s --------------------


@dataclass
class Answer:
    text: str
    calls: list[tuple[str, dict[str, Any]]]  # (name, arguments)
    stop: str


def _chat(url: str, key: str, model: str, stream: bool, tools: bool) -> list[Answer]:
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
    offered = [
        {"type": "function", "function": {"name": n, "description": d, "parameters": s}}
        for n, d, s in TOOLS
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]

    def ask() -> Any:
        extra: dict[str, Any] = {"tools": offered} if tools else {}
        if not stream:
            return client.chat.completions.create(model=model, messages=messages, **extra)
        with client.chat.completions.stream(
            model=model, messages=messages, stream_options={"include_usage": True}, **extra
        ) as events:
            final = events.get_final_completion()
        assert final.usage is not None
        assert final.usage.total_tokens > 0
        return final

    def answer(completion: Any) -> Answer:
        choice = completion.choices[0]
        calls = [
            (c.function.name, json.loads(c.function.arguments))
            for c in choice.message.tool_calls or []
        ]
        return Answer(choice.message.content or "", calls, choice.finish_reason)

    with client:
        first = ask()
        answers = [answer(first)]
        if tools:
            message = first.choices[0].message
            messages.append({
                "role": "assistant", "content": message.content,
                "tool_calls": [{"id": c.id, "type": "function", "function": {
                    "name": c.function.name, "arguments": c.function.arguments}}
                    for c in message.tool_calls or []],
            })  # fmt: skip
            for call in message.tool_calls or []:
                messages.append({"role": "tool", "tool_call_id": call.id, "content": RESULT})
            answers.append(answer(ask()))
    return answers


def _responses(url: str, key: str, model: str, stream: bool, tools: bool) -> list[Answer]:
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)
    offered = [
        {"type": "function", "name": n, "description": d, "parameters": s, "strict": False}
        for n, d, s in TOOLS
    ]
    items: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]

    def ask() -> Any:
        extra: dict[str, Any] = {"tools": offered} if tools else {}
        if not stream:
            return client.responses.create(model=model, input=items, **extra)  # type: ignore[arg-type]
        with client.responses.stream(model=model, input=items, **extra) as events:  # type: ignore[arg-type]
            return events.get_final_response()

    def answer(response: Any) -> Answer:
        assert response.usage is not None
        assert response.usage.total_tokens > 0
        calls = [
            (item.name, json.loads(item.arguments))
            for item in response.output
            if item.type == "function_call"
        ]
        return Answer(response.output_text, calls, response.status)

    with client:
        first = ask()
        answers = [answer(first)]
        if tools:
            for item in first.output:
                if item.type == "function_call":
                    items.append({"type": "function_call", "call_id": item.call_id,
                                  "name": item.name, "arguments": item.arguments})  # fmt: skip
                    items.append(
                        {"type": "function_call_output", "call_id": item.call_id, "output": RESULT}
                    )
            answers.append(answer(ask()))
    return answers


def _messages(url: str, key: str, model: str, stream: bool, tools: bool) -> list[Answer]:
    client = anthropic.Anthropic(api_key=key, base_url=url, max_retries=0)
    offered = [{"name": n, "description": d, "input_schema": s} for n, d, s in TOOLS]
    messages: list[dict[str, Any]] = [{"role": "user", "content": PROMPT}]

    def ask() -> Any:
        extra: dict[str, Any] = {"tools": offered} if tools else {}
        if not stream:
            return client.messages.create(model=model, max_tokens=1024, messages=messages, **extra)  # type: ignore[arg-type]
        with client.messages.stream(
            model=model, max_tokens=1024, messages=messages, **extra
        ) as events:  # type: ignore[arg-type]
            return events.get_final_message()

    def answer(message: Any) -> Answer:
        assert message.usage.input_tokens + message.usage.output_tokens > 0
        said = "".join(b.text for b in message.content if b.type == "text")
        calls = [(b.name, dict(b.input)) for b in message.content if b.type == "tool_use"]
        return Answer(said, calls, message.stop_reason)

    with client:
        first = ask()
        answers = [answer(first)]
        if tools:
            sent: list[dict[str, Any]] = []
            for block in first.content:
                if block.type == "text" and block.text:
                    sent.append({"type": "text", "text": block.text})
                elif block.type == "tool_use":
                    sent.append({"type": "tool_use", "id": block.id, "name": block.name,
                                 "input": block.input})  # fmt: skip
            results = [
                {"type": "tool_result", "tool_use_id": b.id, "content": RESULT}
                for b in first.content
                if b.type == "tool_use"
            ]
            messages += [
                {"role": "assistant", "content": sent},
                {"role": "user", "content": results},
            ]
            answers.append(answer(ask()))
    return answers


CLIENTS: dict[str, Callable[[str, str, str, bool, bool], list[Answer]]] = {
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
    "/v1/messages": _messages,
}
STOPS = {  # (text, tool call) per endpoint
    "/v1/chat/completions": ("stop", "tool_calls"),
    "/v1/responses": ("completed", "completed"),
    "/v1/messages": ("end_turn", "tool_use"),
}


# Metering, written out independently of the gateway's normalisation -------------------------


def _normalised(provider: str, raw: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input incl. cache reads and writes, cache reads, cache writes, output incl. reasoning)."""
    if provider == "anthropic":
        read, written = raw["cache_read_input_tokens"], raw["cache_creation_input_tokens"]
        return raw["input_tokens"] + read + written, read, written, raw["output_tokens"]
    if provider == "gemini":
        output = raw["candidatesTokenCount"] + raw.get("thoughtsTokenCount", 0)
        return raw["promptTokenCount"], raw.get("cachedContentTokenCount", 0), 0, output
    if "input_tokens" in raw:  # OpenAI's Responses API
        cached = raw["input_tokens_details"]["cached_tokens"]
        return raw["input_tokens"], cached, 0, raw["output_tokens"]
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or raw.get("prompt_cache_hit_tokens") or 0
    return raw["prompt_tokens"], cached, 0, raw["completion_tokens"]


def _cost(usage: tuple[int, int, int, int], prices: tuple[str, str, str, str]) -> int:
    tokens_in, read, written, out = usage
    price_in, price_read, price_out, price_write = (Decimal(p) for p in prices)
    usd = (tokens_in - read - written) * price_in + read * price_read
    usd += written * price_write + out * price_out
    return math.ceil(usd)  # USD per million tokens x tokens = micro-USD


def _logs(url: str, key: str, count: int) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    for _ in range(200):
        response = httpx.get(f"{url}/v1/logs", headers={"Authorization": f"Bearer {key}"})
        data = response.json()["data"]
        if len(data) >= count:
            return data
        time.sleep(0.02)
    raise AssertionError(f"the log never reached {count} entries: {data}")


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("endpoint", list(CLIENTS))
def test_cell(
    gateway: Gateway, fakes: Fakes, cell_key: str, endpoint: str, provider: str,
    stream: bool, tools: bool,
) -> None:  # fmt: skip
    spec = PROVIDERS[provider]
    if endpoint == "/v1/responses":
        spec = NATIVE_RESPONSES.get(provider, spec)
    answers = CLIENTS[endpoint](gateway.url, cell_key, spec.model, stream, tools)
    text_stop, tool_stop = STOPS[endpoint]
    first = answers[0]
    if tools:
        assert [name for name, _ in first.calls] == list(spec.tool_names)
        name, value = spec.first_argument
        assert first.calls[0][1][name] == value
        assert first.stop == tool_stop
        final = answers[1]
        assert final.calls == []
        if spec.answers_result:
            assert "21" in final.text
    else:
        assert first.calls == []
        assert first.text.startswith(spec.text[stream]), first.text
        final = first
    assert final.text
    assert final.stop == text_stop

    logs = _logs(gateway.url, cell_key, len(answers))
    assert len(logs) == len(answers)
    assert {(e["endpoint"], e["provider"], e["status"]) for e in logs} == {
        (endpoint, provider, 200)
    }
    if provider == "mock":
        assert all(e["input_tokens"] > 0 and e["output_tokens"] > 0 for e in logs)
        assert all(e["cost_micros"] == 0 for e in logs)
        return
    reported = [_normalised(provider, raw) for raw in fakes.reported(provider)]
    assert len(reported) == len(answers)
    expected = sorted((u[0], u[1], u[3], _cost(u, spec.prices)) for u in reported)
    metered = sorted(
        (e["input_tokens"], e["cached_input_tokens"], e["output_tokens"], e["cost_micros"])
        for e in logs
    )
    assert metered == expected
    assert not any(e["estimated"] for e in logs)


# Beyond the matrix: what agents also do, and streams that die, seen through the SDKs ----------


def _fresh_key(gateway: Gateway, **fields: Any) -> str:
    response = httpx.post(
        f"{gateway.url}/v1/keys",
        json={"name": "extra", **fields},
        headers={"Authorization": f"Bearer {gateway.master}"},
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def test_agents_betas_and_count_tokens_through_the_anthropic_sdk(
    gateway: Gateway, fakes: Fakes
) -> None:
    fakes.reset()
    key = _fresh_key(gateway)
    with anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0) as client:
        message = client.beta.messages.create(
            model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
            betas=["interleaved-thinking-2025-05-14"],
        )  # fmt: skip
        exact = client.messages.count_tokens(
            model="claude-sonnet-4", messages=[{"role": "user", "content": PROMPT}]
        )
        estimated = client.messages.count_tokens(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": PROMPT}]
        )
    assert message.content[0].type == "text"
    seen = fakes.anthropic.seen
    assert seen[0].query == {}  # `?beta=true` is Tollgate's, not forwarded
    assert seen[0].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert exact.input_tokens == 1
    assert estimated.input_tokens > 1
    assert [s.path for s in seen] == ["/v1/messages", "/v1/messages/count_tokens"]


@pytest.mark.parametrize(("model", "mode"), [("claude-sonnet-4", "midstream_error"),
                                             ("gemini-2.5-flash", "drop"),
                                             ("gpt-4o", "drop")])  # fmt: skip
@pytest.mark.parametrize("endpoint", list(CLIENTS))
def test_a_stream_that_dies_fails_cleanly_in_each_sdk(
    gateway: Gateway, fakes: Fakes, endpoint: str, model: str, mode: str
) -> None:
    fakes.reset()
    fakes.anthropic.mode = fakes.gemini.mode = fakes.openai.mode = mode
    key = _fresh_key(gateway)
    said = [{"role": "user", "content": "Hello there, how are you today?"}]
    if endpoint == "/v1/messages":
        with anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0) as claude:
            with (
                pytest.raises(anthropic.APIStatusError) as failed,
                claude.messages.stream(model=model, max_tokens=64, messages=said) as events,
            ):
                events.get_final_message()
            assert failed.value.body["error"]["type"] in ("overloaded_error", "api_error")
    else:
        with openai.OpenAI(api_key=key, base_url=f"{gateway.url}/v1", max_retries=0) as client:
            if endpoint == "/v1/chat/completions":
                with (
                    pytest.raises(openai.APIError, match=r"\w"),
                    client.chat.completions.stream(model=model, messages=said) as chunks,
                ):
                    chunks.get_final_completion()
            else:
                with client.responses.stream(model=model, input=said) as stream:  # type: ignore[arg-type]
                    kinds = [event.type for event in stream]
                assert kinds[-2:] == ["error", "response.failed"]
                assert "response.completed" not in kinds
    (entry,) = _logs(gateway.url, key, 1)
    assert entry["status"] in (502, 503)
    assert entry["output_tokens"] > 0
