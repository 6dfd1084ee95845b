"""Google's API shape inbound (`api/gateway/dialects/gemini`): the google-genai SDK, unchanged
but for its base URL, through a real server to the fake upstreams of all four providers.
Gemini models get the client's body; GPT and Claude are translated. What Tollgate meters is
what the fake upstream reported; caps hold; errors come in Google's shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from pydantic import SecretStr

from api.app import create_app
from api.settings import Settings
from tests.factories.tenants import bearer, create_key, create_tenant
from tests.factories.usage import logs_when_seen
from tests.fakes import gemini_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import THOUGHTS, FakeGemini
from tests.fakes.upstream import FakeUpstream
from tools.testenv import free_port

# google-genai's async client subclasses aiohttp's ClientSession, which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)
MODELS = ["gemini-2.5-flash", "gpt-4o-mini", "claude-sonnet-4"]
EVERY_PROVIDER = [*MODELS, "deepseek-chat"]
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="The weather in a city.",
    parameters_json_schema={
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
)
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}


async def _key(http: httpx.AsyncClient, **fields: Any) -> tuple[dict[str, str], str]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return bearer(key["secret"]), key["secret"]


def _sdk(url: str, secret: str, version: str | None = None) -> genai.Client:
    options: dict[str, Any] = {"base_url": url}
    if version is not None:
        options["api_version"] = version
    return genai.Client(api_key=secret, http_options=options)


def _reported(
    model: str, upstream: FakeUpstream, claude: FakeAnthropic, gemini: FakeGemini
) -> tuple[int, int]:
    """(input, output) the upstream fake billed for its last answer, normalised as SPEC §7
    meters it (input ⊇ cache, output ⊇ reasoning)."""
    if model.startswith("gemini"):
        u = gemini.reported[-1]
        return u["promptTokenCount"], u["candidatesTokenCount"] + u.get("thoughtsTokenCount", 0)
    if model.startswith("claude"):
        u = claude.reported[-1]
        prompt = u["input_tokens"] + u.get("cache_read_input_tokens", 0)
        return prompt + u.get("cache_creation_input_tokens", 0), u["output_tokens"]
    u = upstream.reported[-1]
    return u["prompt_tokens"], u["completion_tokens"]


def _seen(
    model: str, upstream: FakeUpstream, claude: FakeAnthropic, gemini: FakeGemini
) -> dict[str, Any]:
    fake = gemini if model.startswith("gemini") else claude if model.startswith("claude") else None
    body: dict[str, Any] = (fake or upstream).seen[-1].body
    return body


class TestGenerateContent:
    @pytest.mark.parametrize("model", EVERY_PROVIDER)
    async def test_generate_content_is_metered_as_the_upstream_reported(
        self,
        every_provider_url: str,
        every_http: httpx.AsyncClient,
        upstream: FakeUpstream,
        claude: FakeAnthropic,
        gemini: FakeGemini,
        model: str,
    ):
        headers, secret = await _key(every_http)
        client = _sdk(every_provider_url, secret)
        response = await client.aio.models.generate_content(
            model=model,
            contents="Hello there",
            config=types.GenerateContentConfig(max_output_tokens=200, temperature=0.3),
        )
        assert response.text
        assert response.candidates is not None
        assert response.candidates[0].finish_reason == types.FinishReason.STOP
        assert response.usage_metadata is not None
        (entry,) = await logs_when_seen(every_http, headers, 1)
        tokens_in, tokens_out = _reported(model, upstream, claude, gemini)
        assert (entry["input_tokens"], entry["output_tokens"]) == (tokens_in, tokens_out)
        assert entry["status"] == 200
        assert not entry["estimated"]
        assert response.usage_metadata.prompt_token_count == tokens_in
        if model.startswith("gemini"):  # Google's own answer, relayed
            assert response.text == "You said: Hello there"
            assert response.usage_metadata.thoughts_token_count == THOUGHTS
            assert gemini.seen[-1].path == f"/v1beta/models/{model}:generateContent"

    @pytest.mark.parametrize("model", EVERY_PROVIDER)
    async def test_generate_content_stream_relays_chunks_and_meters_the_last_usage(
        self,
        every_provider_url: str,
        every_http: httpx.AsyncClient,
        upstream: FakeUpstream,
        claude: FakeAnthropic,
        gemini: FakeGemini,
        model: str,
    ):
        headers, secret = await _key(every_http)
        client = _sdk(every_provider_url, secret)
        chunks = [
            chunk
            async for chunk in await client.aio.models.generate_content_stream(
                model=model, contents="Hello there"
            )
        ]
        assert len(chunks) > 1
        said = "".join(chunk.text or "" for chunk in chunks)
        assert said
        last = chunks[-1]
        assert last.candidates is not None
        assert last.candidates[0].finish_reason == types.FinishReason.STOP
        (entry,) = await logs_when_seen(every_http, headers, 1)
        tokens_in, tokens_out = _reported(model, upstream, claude, gemini)
        assert (entry["input_tokens"], entry["output_tokens"]) == (tokens_in, tokens_out)
        assert last.usage_metadata is not None
        assert last.usage_metadata.prompt_token_count == tokens_in
        if model.startswith("gemini"):
            assert said == "You said: Hello there"
            assert gemini.seen[-1].query == {"alt": "sse"}

    @pytest.mark.parametrize("model", MODELS)
    async def test_a_function_call_round_trip(
        self,
        every_provider_url: str,
        every_http: httpx.AsyncClient,
        upstream: FakeUpstream,
        claude: FakeAnthropic,
        gemini: FakeGemini,
        model: str,
    ):
        headers, secret = await _key(every_http)
        client = _sdk(every_provider_url, secret)
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        question = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
        first = await client.aio.models.generate_content(
            model=model, contents=[question], config=config
        )
        calls = first.function_calls
        assert calls, first
        assert first.candidates is not None
        assert first.candidates[0].content is not None
        answers = [
            types.Part.from_function_response(name=call.name or "", response={"temp_c": 21})
            for call in calls
        ]
        history = [question, first.candidates[0].content, types.Content(role="user", parts=answers)]
        second = await client.aio.models.generate_content(
            model=model, contents=history, config=config
        )
        assert second.text
        assert not second.function_calls
        # The upstream got the call and its result back, in its own format, and the tool's
        # schema (google-genai sends it as `parameters_json_schema`).
        seen = _seen(model, upstream, claude, gemini)
        said = orjson.dumps(seen).decode()
        assert "21" in said
        assert calls[0].name in said
        assert '"location":{"type":"string"}' in orjson.dumps(seen["tools"]).decode()
        logs = await logs_when_seen(every_http, headers, 2)
        assert [e["status"] for e in logs] == [200, 200]
        if model.startswith("gemini"):  # the signature went back to Google with its call
            parts = gemini.seen[-1].body["contents"][1]["parts"]
            assert parts[0]["thoughtSignature"] == gemini_upstream.SIGNATURE
            assert second.text.startswith("The function said:")

    async def test_a_function_call_streams_whole(
        self, every_provider_url: str, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, secret = await _key(every_http)
        client = _sdk(every_provider_url, secret)
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[WEATHER])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        stream = await client.aio.models.generate_content_stream(
            model="claude-sonnet-4", contents="Weather in Paris?", config=config
        )
        calls = [call async for chunk in stream for call in chunk.function_calls or []]
        assert len(calls) == 1
        assert calls[0].name == "get_weather"
        assert isinstance(calls[0].args, dict)
        assert "tools" in claude.seen[-1].body

    @pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o-mini"])
    async def test_a_chat_session_streams_turn_after_turn(
        self, every_provider_url: str, every_http: httpx.AsyncClient, claude: FakeAnthropic,
        upstream: FakeUpstream, model: str,
    ):  # fmt: skip
        """google-genai's chat keeps the streamed chunks as history and sends them back."""
        headers, secret = await _key(every_http)
        chat = _sdk(every_provider_url, secret).aio.chats.create(model=model)
        for said in ("Hello there", "And again"):
            text = [c.text or "" async for c in await chat.send_message_stream(said)]
            assert "".join(text)
        fake = claude if model.startswith("claude") else upstream
        history = orjson.dumps(fake.seen[-1].body).decode()
        assert "Hello there" in history
        assert "And again" in history
        if fake is claude:  # the chunks the SDK kept, one assistant turn again
            roles = [m["role"] for m in claude.seen[-1].body["messages"]]
            assert roles == ["user", "assistant", "user"]
        await logs_when_seen(every_http, headers, 2)

    @pytest.mark.parametrize("include", [True, False])
    @pytest.mark.parametrize("stream", [True, False])
    async def test_claudes_thinking_is_a_thought_part_only_when_asked_for(
        self, every_provider_url: str, every_http: httpx.AsyncClient, claude: FakeAnthropic,
        include: bool, stream: bool,
    ):  # fmt: skip
        _, secret = await _key(every_http)
        models = _sdk(every_provider_url, secret).aio.models
        thinking = types.ThinkingConfig(thinking_budget=2048, include_thoughts=include)
        config = types.GenerateContentConfig(thinking_config=thinking, max_output_tokens=4096)
        if stream:
            opened = await models.generate_content_stream(
                model="claude-sonnet-4", contents="Hello there", config=config
            )
            answers = [chunk async for chunk in opened]
        else:
            answers = [
                await models.generate_content(
                    model="claude-sonnet-4", contents="Hello there", config=config
                )
            ]
        assert claude.seen[-1].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        parts = [p for a in answers for c in a.candidates or [] for p in c.content.parts or []]  # type: ignore[union-attr]
        thoughts = "".join(p.text or "" for p in parts if p.thought)
        assert thoughts == ("Let me think about that." if include else "")
        assert "".join(a.text or "" for a in answers) == "You said: Hello there"


class TestCountTokens:
    @pytest.mark.parametrize("model", MODELS)
    async def test_count_tokens_counts_without_metering(
        self, every_provider_url: str, every_http: httpx.AsyncClient, model: str
    ):
        headers, secret = await _key(every_http)
        client = _sdk(every_provider_url, secret)
        counted = await client.aio.models.count_tokens(model=model, contents="Hello there friend")
        assert counted.total_tokens is not None
        assert counted.total_tokens > 0
        if model.startswith("gemini"):
            assert counted.total_tokens == 3  # the fake's count
        raw = await every_http.post(
            f"/v1beta/models/{model}:countTokens", json=HELLO, headers=headers
        )
        assert raw.status_code == 200, raw.text
        exact = "exact" if model.startswith("gemini") else "estimated"
        assert raw.headers["x-tollgate-token-count"] == exact
        assert (await every_http.get("/v1/logs", headers=headers)).json()["data"] == []

    async def test_a_generate_content_request_is_counted_with_its_model_named(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        headers, _ = await _key(every_http)
        body = {"generateContentRequest": {"model": "models/whatever", **HELLO}}
        raw = await every_http.post(
            "/v1/models/gemini-2.5-flash:countTokens", json=body, headers=headers
        )
        assert raw.status_code == 200, raw.text
        seen = gemini.seen[-1].body["generateContentRequest"]
        assert seen["model"] == "models/gemini-2.5-flash"


class TestModels:
    async def test_the_sdk_lists_and_gets_this_keys_models_on_v1beta(
        self, every_provider_url: str, every_http: httpx.AsyncClient
    ):
        _, secret = await _key(every_http, allowed_models=["gemini-2.5-flash", "gpt-4o-mini"])
        client = _sdk(every_provider_url, secret, version="v1beta")
        names = [m.name async for m in await client.aio.models.list()]
        assert names == ["models/gemini-2.5-flash", "models/gpt-4o-mini"]
        model = await client.aio.models.get(model="gpt-4o-mini")
        assert model.input_token_limit == 128_000
        assert model.supported_actions == ["generateContent", "countTokens"]
        with pytest.raises(genai_errors.ClientError) as caught:
            await client.aio.models.get(model="claude-sonnet-4")
        assert caught.value.code == 404
        assert caught.value.status == "NOT_FOUND"

    async def test_pages_follow_next_page_token(self, every_http: httpx.AsyncClient):
        headers, _ = await _key(every_http)
        first = (await every_http.get("/v1beta/models?pageSize=2", headers=headers)).json()
        assert len(first["models"]) == 2
        rest = await every_http.get(
            "/v1beta/models", params={"pageSize": 100, "pageToken": first["nextPageToken"]},
            headers=headers,
        )  # fmt: skip
        names = [m["name"] for m in first["models"] + rest.json()["models"]]
        assert "nextPageToken" not in rest.json()
        assert len(names) == len(set(names)) > 2
        # generateContent's models only: embeddings, audio and images are OpenAI-shaped here.
        assert "models/gemini-2.5-flash" in names
        assert "models/gemini-embedding-001" not in names
        assert "models/whisper-1" not in names

    async def test_v1_models_stays_openais_list(self, every_http: httpx.AsyncClient):
        headers, _ = await _key(every_http)
        listed = (await every_http.get("/v1/models", headers=headers)).json()
        assert listed["object"] == "list"
        assert {"id", "owned_by"} <= set(listed["data"][0])


class TestKeys:
    async def test_a_key_in_the_query_string_is_accepted_and_never_logged(
        self, gateway_settings: Settings, claude: FakeAnthropic, gemini: FakeGemini,
        caplog: pytest.LogCaptureFixture,
    ):  # fmt: skip
        settings = gateway_settings.model_copy(
            update={"gemini_api_key": SecretStr(gemini_upstream.API_KEY),
                    "gemini_base_url": gemini.base_url}
        )  # fmt: skip
        with _served_with_access_log(create_app(settings)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                headers, secret = await _key(http)
                caplog.clear()
                path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
                response = await http.post(f"{path}?alt=sse&key={secret}", json=HELLO)
                assert response.status_code == 200, response.text
                bad = await http.post(f"{path}?key=qlk_live_nope&alt=sse", json=HELLO)
                assert bad.status_code == 401
                await logs_when_seen(http, headers, 1)
        lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
        assert any("streamGenerateContent?alt=sse" in line for line in lines), lines
        assert not any(secret in line or "qlk_live_nope" in line for line in lines)
        assert "key" not in gemini.seen[-1].query  # nor sent on upstream
        assert gemini.seen[-1].headers["x-goog-api-key"] == gemini_upstream.API_KEY

    async def test_no_key_is_googles_unauthenticated(self, every_http: httpx.AsyncClient):
        response = await every_http.post("/v1/models/gemini-2.5-flash:generateContent", json=HELLO)
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
        assert "key=" in error["message"]


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "contents"),
            ({"contents": "hi"}, "contents"),
            ({"contents": [{"role": "user"}]}, "contents[0].parts"),
            ({**HELLO, "generationConfig": {"maxOutputTokens": 0}},
             "generationConfig.maxOutputTokens"),
            ({**HELLO, "generationConfig": {"candidateCount": 9}},
             "generationConfig.candidateCount"),
            ({**HELLO, "generationConfig": {"thinkingConfig": {"thinkingBudget": "lots"}}},
             "generationConfig.thinkingConfig.thinkingBudget"),
            ({**HELLO, "generationConfig": {"responseModalities": ["IMAGE"]}},
             "generationConfig.responseModalities"),
            ({**HELLO, "cachedContent": "cachedContents/abc"}, "cachedContent"),
            ({**HELLO, "serviceTier": "priority"}, "serviceTier"),
            ({**HELLO, "tools": [{"mcpServers": [{"name": "x"}]}]}, "tools[0].mcpServers"),
            ({"contents": [{"parts": [{"fileData": {"fileUri": "files/abc123"}}]}]},
             "fileData.fileUri"),
        ],
    )  # fmt: skip
    @pytest.mark.parametrize("model", ["gemini-2.5-flash", "gpt-4o-mini"])
    async def test_bad_input_is_a_google_400_naming_the_field(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini, upstream: FakeUpstream,
        body: dict[str, Any], field: str, model: str,
    ):  # fmt: skip
        headers, _ = await _key(every_http)
        response = await every_http.post(
            f"/v1beta/models/{model}:generateContent", json=body, headers=headers
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == 400
        assert error["status"] == "INVALID_ARGUMENT"
        assert field in error["message"]
        violations = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
        assert violations[0]["fieldViolations"][0]["field"] == field
        assert not gemini.seen
        assert not upstream.seen
        (entry,) = await logs_when_seen(every_http, headers, 1)  # a refusal, at no cost
        assert (entry["status"], entry["cost_micros"]) == (400, 0)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"contents": [{"role": "user", "parts": ["text"]}]}, "contents[0].parts[0]"),
            ({"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
            ({"contents": [{"parts": [{"inlineData": {"data": 5}}]}]},
             "contents[0].parts[0].inlineData.data"),
            ({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f",
                                                                           "args": "x"}}]}]},
             "contents[0].parts[0].functionCall.args"),
            ({**HELLO, "systemInstruction": {"parts": [{"text": 1}]}}, "systemInstruction.parts"),
            ({**HELLO, "tools": [{"functionDeclarations": "f"}]}, "tools[0]"),
            ({**HELLO, "toolConfig": {"functionCallingConfig": "ANY"}},
             "toolConfig.functionCallingConfig"),
            ({**HELLO, "generationConfig": {"temperature": "hot"}},
             "generationConfig.temperature"),
            ({**HELLO, "generationConfig": {"stopSequences": "x"}}, "stopSequences"),
            ({**HELLO, "generationConfig": {"responseMimeType": "application/json",
                                            "responseSchema": "x"}},
             "generationConfig.responseSchema"),
            ({"contents": [{"parts": [{"text": "a"}]}] * 3 + [[]]}, "contents[3]"),
        ],
    )  # fmt: skip
    async def test_a_body_translation_cannot_read_is_a_400_naming_the_field(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream, body: dict[str, Any],
        field: str,
    ):  # fmt: skip
        headers, _ = await _key(every_http)
        response = await every_http.post(
            "/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse", json=body, headers=headers
        )
        assert response.status_code == 400, response.text
        assert field in response.json()["error"]["message"]
        assert not upstream.seen

    @pytest.mark.parametrize(
        "raw", [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100_000, b"[]", b'"a string"', b"null"]
    )
    @pytest.mark.parametrize("model", ["gemini-2.5-flash", "gpt-4o-mini"])
    async def test_a_body_that_is_no_json_object_is_a_400(
        self, every_http: httpx.AsyncClient, raw: bytes, model: str
    ):
        headers, _ = await _key(every_http)
        response = await every_http.post(
            f"/v1/models/{model}:generateContent", content=raw,
            headers={**headers, "content-type": "application/json"},
        )  # fmt: skip
        assert response.status_code == 400, response.text
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"

    async def test_a_part_no_translation_reads_is_a_400_naming_it(
        self, every_http: httpx.AsyncClient
    ):
        headers, _ = await _key(every_http)
        body = {"contents": [{"role": "user", "parts": [{"executableCode": {"code": "1"}}]}]}
        response = await every_http.post(
            "/v1/models/claude-sonnet-4:generateContent", json=body, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["details"][1]["fieldViolations"][0]["field"] == (
            "contents[0].parts[0]"
        )

    async def test_not_json_unknown_model_and_unknown_method(self, every_http: httpx.AsyncClient):
        headers, _ = await _key(every_http)
        path = "/v1beta/models/gemini-2.5-flash:generateContent"
        broken = await every_http.post(path, content=b"{", headers=headers)
        assert broken.status_code == 400
        assert broken.json()["error"]["status"] == "INVALID_ARGUMENT"
        unknown = await every_http.post(
            "/v1beta/models/gemini-9-ultra:generateContent", json=HELLO, headers=headers
        )
        assert unknown.status_code == 400
        assert "gemini-9-ultra" in unknown.json()["error"]["message"]
        method = await every_http.post(
            "/v1/models/gemini-2.5-flash:embedContent", json=HELLO, headers=headers
        )
        assert method.status_code == 404
        assert method.json()["error"]["status"] == "NOT_FOUND"

    async def test_an_unknown_alt_is_a_400_naming_it(self, every_http: httpx.AsyncClient):
        headers, _ = await _key(every_http)
        response = await every_http.post(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=proto",
            json=HELLO, headers=headers,
        )  # fmt: skip
        assert response.status_code == 400
        assert response.json()["error"]["details"][1]["fieldViolations"][0]["field"] == "alt"

    async def test_a_keys_rate_limit_is_googles_resource_exhausted_with_retry_info(
        self, every_provider_url: str, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, secret = await _key(every_http, rpm=1)
        models = _sdk(every_provider_url, secret).aio.models
        await models.generate_content(model="gemini-2.5-flash", contents="Hello")
        with pytest.raises(genai_errors.ClientError) as caught:
            await models.generate_content(model="gemini-2.5-flash", contents="Hello")
        assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
        details = caught.value.details["error"]["details"]
        (retry,) = [d for d in details if d["@type"].endswith("RetryInfo")]
        assert retry["retryDelay"].endswith("s")
        assert len(gemini.seen) == 1

    async def test_upstream_overload_is_googles_unavailable(
        self, every_provider_url: str, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, secret = await _key(every_http)
        gemini.mode = "503"
        with pytest.raises(genai_errors.ServerError) as caught:
            await _sdk(every_provider_url, secret).aio.models.generate_content(
                model="gemini-2.5-flash", contents="Hello"
            )
        assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")

    @pytest.mark.parametrize("model", ["gemini-2.5-flash", "claude-sonnet-4"])
    async def test_a_stream_cut_off_ends_with_an_error_chunk_and_is_billed(
        self, every_provider_url: str, every_http: httpx.AsyncClient, gemini: FakeGemini,
        claude: FakeAnthropic, model: str,
    ):  # fmt: skip
        headers, secret = await _key(every_http)
        gemini.mode = claude.mode = "drop"
        stream = _sdk(every_provider_url, secret).aio.models.generate_content_stream(
            model=model, contents="Hello there, how are you today my friend?"
        )
        said: list[str] = []
        with pytest.raises(genai_errors.APIError) as caught:
            await _drain(stream, said)
        assert caught.value.code == 502
        assert "".join(said)
        (entry,) = await logs_when_seen(every_http, headers, 1)
        assert entry["status"] == 502
        assert entry["output_tokens"] > 0
        assert entry["estimated"]


class TestJsonArrayStream:
    @pytest.mark.parametrize("model", ["gemini-2.5-flash", "gpt-4o-mini"])
    async def test_without_alt_sse_the_stream_is_one_json_array(
        self, every_http: httpx.AsyncClient, model: str
    ):
        headers, _ = await _key(every_http)
        response = await every_http.post(
            f"/v1beta/models/{model}:streamGenerateContent", json=HELLO, headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        chunks = orjson.loads(response.content)
        assert isinstance(chunks, list)
        assert len(chunks) > 1
        assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        assert chunks[-1]["usageMetadata"]["promptTokenCount"] > 0
        await logs_when_seen(every_http, headers, 1)


class TestCostPolicy:
    async def test_a_gemini_body_reaches_google_as_sent_less_what_the_policy_drops(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        headers, _ = await _key(every_http)
        safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
        body = {
            **HELLO,
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "safetySettings": safety,
            "tools": [{"googleSearch": {}}, {"codeExecution": {}}],
            "generationConfig": {"temperature": 0.1, "topK": 3, "someFutureKnob": True},
            "aFieldFromNextYear": 1,
        }
        response = await every_http.post(
            "/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers=headers
        )
        assert response.status_code == 200, response.text
        said = response.headers["x-tollgate-warning"]
        for name in ("googleSearch", "codeExecution", "someFutureKnob", "aFieldFromNextYear"):
            assert name in said
        seen = gemini.seen[-1].body
        assert seen == {
            "contents": HELLO["contents"],
            "systemInstruction": body["systemInstruction"],
            "safetySettings": safety,
            "generationConfig": {"temperature": 0.1, "topK": 3, "maxOutputTokens": 65_536},
        }
        assert response.json()["provider"] == "gemini"

    async def test_a_tight_cap_clamps_max_output_tokens_and_a_spent_one_refuses(
        self, every_provider_url: str, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        # $0.001 at Flash's $2.50 per million output tokens: a few hundred tokens.
        _headers, secret = await _key(every_http, max_spend_usd=0.001)
        client = _sdk(every_provider_url, secret)
        response = await client.aio.models.generate_content(
            model="gemini-2.5-flash", contents="Hello", config={"candidate_count": 2}
        )
        assert response.text
        held = gemini.seen[-1].body["generationConfig"]["maxOutputTokens"]
        assert 0 < held < 200  # two candidates' worth had to fit
        assert response.sdk_http_response is not None
        clamped = response.sdk_http_response.headers
        assert clamped is not None
        assert clamped["x-tollgate-max-tokens-clamped"] == str(held)
        _, spent = await _key(every_http, max_spend_usd=0.000001)
        sent = len(gemini.seen)
        models = _sdk(every_provider_url, spent).aio.models
        with pytest.raises(genai_errors.ClientError) as refused:
            await models.generate_content(model="gemini-2.5-flash", contents="Hello")
        stream = models.generate_content_stream(model="gpt-4o-mini", contents="Hi")
        with pytest.raises(genai_errors.ClientError) as refused_stream:
            await _drain(stream, [])
        for caught in (refused, refused_stream):
            assert (caught.value.code, caught.value.status) == (402, "RESOURCE_EXHAUSTED")
            assert "limit" in (caught.value.message or "")
        assert len(gemini.seen) == sent  # nothing reached the upstream


async def _drain(
    opening: Awaitable[AsyncIterator[types.GenerateContentResponse]], said: list[str]
) -> None:
    """Open a google-genai stream and read it to its end (or its error), keeping its text."""
    async for chunk in await opening:
        said.append(chunk.text or "")


def _served_with_access_log(app: Any) -> Any:
    """Tollgate under uvicorn as `tollgate serve` runs it at the default level: with an access
    log, whose lines go to the root logger here (where `caplog` reads them)."""
    import contextlib
    import threading
    import time

    @contextlib.contextmanager
    def served() -> Iterator[str]:
        access = logging.getLogger("uvicorn.access")
        level, propagate = access.level, access.propagate
        access.setLevel(logging.INFO)
        access.propagate = True
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
            log_config=None, access_log=True, lifespan="on",
        )  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(20)
            access.setLevel(level)
            access.propagate = propagate

    return served()
