"""`/v1/messages`, `/v1/messages/count_tokens` and `/v1/responses` (and `/v1/chat/completions`
to non-OpenAI models) through a real server to all four fake upstreams: same-family passthrough,
caps applied to each dialect's field, errors in each family's shape (mid-stream included), and
billing from normalised usage."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from api.gateway import pipeline
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import logs_when_seen
from tests.fakes import anthropic_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import THOUGHTS, FakeGemini
from tests.fakes.upstream import FakeUpstream

SONNET = ("3.00", "0.30", "15.00", "3.75")  # input, cache read, output, cache write (USD / M)
FLASH = ("0.30", "0.03", "2.50", "0.30")
HELLO = [{"role": "user", "content": "Hello"}]
LONG_SYSTEM = " ".join(["Policy clause."] * 600)


async def _key(http: httpx.AsyncClient, **fields: Any) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return tenant, bearer(key["secret"])


def _events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per SSE event; `[DONE]` stays a string."""
    out: list[tuple[str | None, Any]] = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            joined = b"\n".join(data)
            out.append((name, joined.decode() if joined == b"[DONE]" else orjson.loads(joined)))
    return out


def _price(
    tokens_in: int, read: int, written: int, out: int, prices: tuple[str, str, str, str]
) -> int:
    p_in, p_read, p_out, p_write = (Decimal(p) for p in prices)
    usd = (tokens_in - read - written) * p_in + read * p_read + written * p_write + out * p_out
    return math.ceil(usd)  # USD per million tokens times tokens is micro-USD


class TestWarnings:
    async def test_every_drop_is_named_whether_translation_or_the_cost_policy_made_it(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, headers = await _key(every_http)
        body = {"model": "claude-sonnet-4", "messages": HELLO, "a_field_from_next_year": 1,
                "tools": [{"type": "web_search_preview"}]}  # fmt: skip
        response = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        said = response.headers["x-tollgate-warning"]
        assert "a_field_from_next_year" in said  # the cost policy's
        assert "web_search_preview" in said  # translation's
        assert "a_field_from_next_year" not in claude.seen[-1].body


class TestAnthropicPassthrough:
    async def test_body_and_betas_reach_anthropic_unchanged_less_unknown_fields(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, headers = await _key(every_http)
        body = {
            "model": "claude-sonnet-4",
            "max_tokens": 300,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": HELLO,
            "metadata": {"user_id": "u-1"},
            "some_future_field": {"x": [1, 2]},
        }
        betas = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
        response = await every_http.post(
            "/v1/messages?beta=true",
            json=body,
            headers={**headers, "anthropic-beta": betas, "anthropic-version": "2023-06-01"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["provider"] == "anthropic"
        assert response.json()["content"][0]["text"] == "You said: Hello"
        seen = claude.seen[-1]
        known = {k: v for k, v in body.items() if k != "some_future_field"}
        assert seen.body == {**known, "model": "claude-sonnet-4-20250514"}
        assert "some_future_field" in response.headers["x-tollgate-warning"]
        assert seen.headers["anthropic-beta"] == betas
        assert seen.headers["x-api-key"] == anthropic_upstream.API_KEY  # never the client's key

    async def test_a_missing_max_tokens_is_the_models_own_maximum(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, headers = await _key(every_http)
        response = await every_http.post(
            "/v1/messages", json={"model": "claude-sonnet-4", "messages": HELLO}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert claude.seen[-1].body["max_tokens"] == 64_000

    @pytest.mark.parametrize("stream", [False, True])
    async def test_cache_heavy_answers_cost_the_price_table_on_normalised_usage(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, stream: bool
    ):
        _, headers = await _key(every_http)
        system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
        body = {"model": "claude-sonnet-4", "max_tokens": 100, "system": system,
                "messages": HELLO, "stream": stream}  # fmt: skip
        for _ in range(2):  # the first writes the cache, the second reads it
            response = await every_http.post("/v1/messages", json=body, headers=headers)
            assert response.status_code == 200, response.text
        logs = sorted(await logs_when_seen(every_http, headers, 2), key=lambda e: e["created_at"])
        write, read = claude.reported
        assert write["cache_creation_input_tokens"] == 1200
        assert read["cache_read_input_tokens"] == 1200
        for raw, entry in zip((write, read), logs, strict=True):
            r, w = raw["cache_read_input_tokens"], raw["cache_creation_input_tokens"]
            total_in = raw["input_tokens"] + r + w
            assert entry["input_tokens"] == total_in
            assert entry["cached_input_tokens"] == r
            assert entry["output_tokens"] == raw["output_tokens"]
            assert entry["cost_micros"] == _price(total_in, r, w, raw["output_tokens"], SONNET)
            assert not entry["estimated"]
        if stream:
            names = [name for name, _ in _events(response.content)]
            assert names[0] == "message_start"
            assert "ping" in names  # relayed as the provider sent it
            assert names[-1] == "message_stop"


class TestUnreadableAnswers:
    async def test_an_answer_that_cannot_be_read_is_a_502_still_billed(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, headers = await _key(every_http)
        gemini.mode = "unreadable"
        body = {"model": "gemini-2.5-flash", "messages": HELLO, "max_tokens": 200}
        response = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_error"
        (entry,) = await logs_when_seen(every_http, headers, 1)
        raw = gemini.reported[-1]
        output = raw["candidatesTokenCount"] + THOUGHTS
        assert (entry["status"], entry["output_tokens"]) == (502, output)
        assert entry["cost_micros"] == _price(raw["promptTokenCount"], 0, 0, output, FLASH)


class TestGeminiThinking:
    @pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/responses", "/v1/messages"])
    @pytest.mark.parametrize("stream", [False, True])
    async def test_thoughts_are_billed_as_output(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini, endpoint: str, stream: bool
    ):
        _, headers = await _key(every_http)
        if endpoint == "/v1/responses":
            body: dict[str, Any] = {"model": "gemini-2.5-flash", "input": "Hello"}
        else:
            body = {"model": "gemini-2.5-flash", "messages": HELLO, "max_tokens": 200}
        response = await every_http.post(endpoint, json={**body, "stream": stream}, headers=headers)
        assert response.status_code == 200, response.text
        (entry,) = await logs_when_seen(every_http, headers, 1)
        raw = gemini.reported[-1]
        output = raw["candidatesTokenCount"] + THOUGHTS
        assert entry["reasoning_tokens"] == THOUGHTS
        assert entry["output_tokens"] == output
        assert entry["input_tokens"] == raw["promptTokenCount"]
        assert entry["cost_micros"] == _price(raw["promptTokenCount"], 0, 0, output, FLASH)


def _family_error(endpoint: str, events: list[tuple[str | None, Any]]) -> dict[str, Any]:
    """The error a stream ended with, checked to be well-formed in the endpoint's family."""
    if endpoint == "/v1/chat/completions":
        assert events[-1] == (None, "[DONE]")
        error: dict[str, Any] = events[-2][1]["error"]
        assert set(error) == {"message", "type", "code", "param"}
        return error
    if endpoint == "/v1/responses":  # `error`, then `response.failed`, as the API ends one
        name, failed = events[-1]
        assert name == "response.failed"
        assert failed["response"]["status"] == "failed"
        events = events[:-1]
    name, data = events[-1]
    assert name == "error"
    if endpoint == "/v1/messages":
        assert data["type"] == "error"
        assert set(data["error"]) >= {"type", "message"}
        assert not any(n == "message_stop" for n, _ in events)
        return dict(data["error"])
    assert data["type"] == "error"
    assert {"code", "message", "sequence_number"} <= set(data)
    assert not any(n == "response.completed" for n, _ in events)
    return dict(data)


class TestMidStreamFailures:
    @pytest.mark.parametrize(
        ("endpoint", "model", "fake", "mode", "status"),
        [
            ("/v1/messages", "claude-sonnet-4", "claude", "midstream_error", 503),
            ("/v1/chat/completions", "claude-sonnet-4", "claude", "midstream_error", 503),
            ("/v1/responses", "claude-sonnet-4", "claude", "midstream_error", 503),
            ("/v1/messages", "claude-sonnet-4", "claude", "drop", 502),
            ("/v1/chat/completions", "gemini-2.5-flash", "gemini", "drop", 502),
            ("/v1/messages", "gemini-2.5-flash", "gemini", "drop", 502),
            ("/v1/responses", "gemini-2.5-flash", "gemini", "drop", 502),
            ("/v1/messages", "gpt-4o", "openai", "drop", 502),
            ("/v1/responses", "gpt-4o", "openai", "drop", 502),
        ],
    )
    async def test_ends_with_an_error_in_the_clients_family_and_bills_what_was_produced(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, gemini: FakeGemini,
        upstream: FakeUpstream, endpoint: str, model: str, fake: str, mode: str, status: int,
    ):  # fmt: skip
        {"claude": claude, "gemini": gemini, "openai": upstream}[fake].mode = mode
        _, headers = await _key(every_http)
        said = "Hello there, how are you today?"  # long enough for Gemini to send it in pieces
        if endpoint == "/v1/responses":
            body: dict[str, Any] = {"model": model, "input": said, "stream": True}
        else:
            messages = [{"role": "user", "content": said}]
            body = {"model": model, "messages": messages, "max_tokens": 100, "stream": True}
        response = await every_http.post(endpoint, json=body, headers=headers)
        assert response.status_code == 200
        events = _events(response.content)
        error = _family_error(endpoint, events)
        assert error["message"]
        (entry,) = await logs_when_seen(every_http, headers, 1)
        assert entry["status"] == status
        assert entry["input_tokens"] > 0
        assert entry["output_tokens"] > 0  # what was relayed before the failure
        assert entry["cost_micros"] > 0


class TestUpstreamConnections:
    """A stream read to its end leaves its upstream connection for the next request: a new
    connection per stream would add a TCP and TLS handshake to every time to first token."""

    @pytest.mark.parametrize(
        ("endpoint", "model"),
        [("/v1/chat/completions", "gpt-4o"), ("/v1/responses", "gpt-4o"),
         ("/v1/messages", "claude-sonnet-4"), ("/v1/chat/completions", "claude-sonnet-4")],
    )  # fmt: skip
    async def test_consecutive_streams_share_one_connection(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, upstream: FakeUpstream,
        endpoint: str, model: str,
    ):  # fmt: skip
        fake: FakeAnthropic | FakeUpstream = claude if model.startswith("claude") else upstream
        _, headers = await _key(every_http)
        body: dict[str, Any] = {"model": model, "stream": True}
        if endpoint == "/v1/responses":
            body["input"] = "Hello"
        else:
            body.update(messages=HELLO, max_tokens=100)
        for _ in range(3):
            response = await every_http.post(endpoint, json=body, headers=headers)
            assert response.status_code == 200
            assert b'"error":{' not in response.content
            await asyncio.sleep(0.05)  # the body's closing chunk follows its last event
        peers = [seen.peer for seen in fake.seen]
        assert len(peers) == 3
        assert len(set(peers)) == 1, peers

    async def test_a_stream_given_up_on_is_closed_not_kept(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        """The upstream goes silent past the gateway's read timeout (2 s here): the stream is
        closed, which stops the generation upstream, rather than kept for reuse."""
        _, headers = await _key(every_http)
        body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
        upstream.pause_after_first = 3.0
        timed_out = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert b'"error":{' in timed_out.content
        for _ in range(60):  # the fake sees the hang-up at its next write, after its pause
            if upstream.disconnects:
                break
            await asyncio.sleep(0.05)
        assert upstream.disconnects == 1
        upstream.pause_after_first = 0.0
        response = await every_http.post("/v1/chat/completions", json=body, headers=headers)
        assert b'"error":{' not in response.content
        first, second = (seen.peer for seen in upstream.seen)
        assert first != second


ABANDONED = [("/v1/messages", "gpt-4o"), ("/v1/messages", "claude-sonnet-4"),
             ("/v1/responses", "claude-sonnet-4"), ("/v1/messages", "gemini-2.5-flash"),
             ("/v1/chat/completions", "deepseek-chat")]  # fmt: skip


Fakes = tuple[FakeAnthropic, FakeUpstream, FakeGemini]


class TestAbandonedStreams:
    """A client that leaves mid-stream: the gateway reads on for the usage the provider bills
    (`Call.abandon`), within a bound; past it, it cancels upstream and bills the worst case."""

    async def _leave_part_way(
        self, every_http: httpx.AsyncClient, fakes: Fakes, endpoint: str, model: str
    ) -> tuple[FakeAnthropic | FakeUpstream | FakeGemini, dict[str, str]]:
        claude, upstream, gemini = fakes
        # 200 ms between chunks: the fakes see a hang-up before their next write.
        upstream.mode, upstream.chunk_delay, upstream.words = "generate", 0.2, 30
        claude.chunk_delay = gemini.chunk_delay = 0.2
        fake = {"claude": claude, "gemini": gemini}.get(model.split("-")[0], upstream)
        _, headers = await _key(every_http)
        said = " ".join(["word"] * 30)
        body: dict[str, Any] = {"model": model, "stream": True}
        if endpoint == "/v1/responses":
            body.update(input=said, max_output_tokens=100)
        else:
            body.update(messages=[{"role": "user", "content": said}], max_tokens=100)
        async with every_http.stream("POST", endpoint, json=body, headers=headers) as response:
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data: ")
                if received == 8:
                    break  # leaving the block closes the connection part way through
        return fake, headers

    @pytest.mark.parametrize(("endpoint", "model"), ABANDONED)
    async def test_the_stream_is_read_on_and_billed_the_usage_upstream_reports(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, upstream: FakeUpstream,
        gemini: FakeGemini, endpoint: str, model: str,
    ):  # fmt: skip
        fakes = (claude, upstream, gemini)
        fake, headers = await self._leave_part_way(every_http, fakes, endpoint, model)
        upstream.chunk_delay = claude.chunk_delay = gemini.chunk_delay = 0.0  # the rest at once
        (entry,) = await logs_when_seen(every_http, headers, 1)
        assert (entry["status"], entry["estimated"]) == (499, False)
        assert entry["output_tokens"] >= 30  # all of the answer, not the part relayed
        assert entry["input_tokens"] > 0
        assert entry["cost_micros"] > 0
        assert fake.disconnects == 0  # read to its end

    @pytest.mark.parametrize(("endpoint", "model"), ABANDONED)
    async def test_without_usage_in_time_upstream_is_cancelled_and_the_worst_case_billed(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, upstream: FakeUpstream,
        gemini: FakeGemini, endpoint: str, model: str, monkeypatch: pytest.MonkeyPatch,
    ):  # fmt: skip
        monkeypatch.setattr(pipeline, "DRAIN_SECONDS", 0.3)
        # A stream kept for reuse instead of closed would be let go only after this long.
        monkeypatch.setattr("api.kit.http1._TAIL_SECONDS", 30.0)
        fakes = (claude, upstream, gemini)
        fake, headers = await self._leave_part_way(every_http, fakes, endpoint, model)
        for _ in range(100):
            if fake.disconnects:
                break
            await asyncio.sleep(0.05)
        assert fake.disconnects == 1
        (entry,) = await logs_when_seen(every_http, headers, 1)
        assert (entry["status"], entry["estimated"]) == (499, True)
        assert entry["output_tokens"] == 100  # the output cap that was held
        assert entry["input_tokens"] > 0


class TestCountTokens:
    @pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o"])
    async def test_counts_are_held_to_the_keys_rpm_and_leave_its_counters_alone(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, model: str
    ):
        tenant = await create_tenant(every_http)
        key = await create_key(every_http, tenant, rpm=2)
        headers = bearer(key["secret"])
        body = {"model": model, "messages": HELLO}
        statuses = [
            (await every_http.post("/v1/messages/count_tokens", json=body, headers=headers))
            for _ in range(3)
        ]
        assert [r.status_code for r in statuses] == [200, 200, 429]
        assert int(statuses[-1].headers["retry-after"]) in range(1, 61)
        # A model request of the same key still has its own two a minute.
        chat = {"model": "gpt-4o", "messages": HELLO}
        assert (
            await every_http.post("/v1/chat/completions", json=chat, headers=headers)
        ).status_code == 200

    async def test_an_estimate_is_counted_off_the_event_loop_and_bounded_in_size(
        self, every_http: httpx.AsyncClient
    ):
        _, headers = await _key(every_http)
        big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "word " * 1_000_000}]}
        counting = asyncio.create_task(
            every_http.post("/v1/messages/count_tokens", json=big, headers=headers)
        )
        # While a million words are counted, the server answers others: before the count ends.
        await asyncio.sleep(0.1)
        health = await every_http.get("/healthz")
        assert health.status_code == 200
        assert not counting.done()
        counted = await counting
        assert counted.status_code == 200, counted.text
        assert counted.json()["input_tokens"] >= 1_000_000
        huge = {**big, "messages": [{"role": "user", "content": "word " * 2_000_000}]}
        refused = await every_http.post("/v1/messages/count_tokens", json=huge, headers=headers)
        assert refused.status_code == 413, refused.text

    async def test_claude_models_are_counted_by_anthropic_and_not_metered(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic
    ):
        _, headers = await _key(every_http)
        body = {"model": "claude-sonnet-4", "system": "Be brief.", "messages": HELLO}
        response = await every_http.post(
            "/v1/messages/count_tokens",
            json=body,
            headers={**headers, "anthropic-beta": "token-counting-2024-11-01"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"input_tokens": 3}
        assert response.headers["x-tollgate-token-count"] == "exact"
        seen = claude.seen[-1]
        assert seen.path == "/v1/messages/count_tokens"
        assert seen.body == {**body, "model": "claude-sonnet-4-20250514"}
        assert seen.headers["anthropic-beta"] == "token-counting-2024-11-01"
        await every_http.post(
            "/v1/messages", json={**body, "max_tokens": 10}, headers=headers
        )  # one model call, so the log has something to wait for
        logs = await logs_when_seen(every_http, headers, 1)
        assert [e["endpoint"] for e in logs] == ["/v1/messages"]

    @pytest.mark.parametrize(("model", "test"), [("gpt-4o", False), ("claude-sonnet-4", True)])
    async def test_other_models_and_test_keys_are_estimated(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, model: str, test: bool
    ):
        _, headers = await _key(every_http, test=test)
        response = await every_http.post(
            "/v1/messages/count_tokens",
            json={"model": model, "messages": HELLO, "tools": [
                {"name": "t", "input_schema": {"type": "object"}}]},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["x-tollgate-token-count"] == "estimated"
        assert response.json()["input_tokens"] > 5
        assert claude.seen == []

    async def test_needs_a_valid_key_and_access(self, every_http: httpx.AsyncClient):
        body = {"model": "claude-sonnet-4", "messages": HELLO}
        anonymous = await every_http.post("/v1/messages/count_tokens", json=body)
        assert anonymous.status_code == 401
        assert anonymous.json()["type"] == "error"
        assert anonymous.json()["error"]["type"] == "authentication_error"
        _, headers = await _key(every_http, allowed_models=["gpt-4o"])
        denied = await every_http.post("/v1/messages/count_tokens", json=body, headers=headers)
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"


class TestErrorsInEachFamily:
    async def test_refusals(self, every_http: httpx.AsyncClient):
        _, headers = await _key(every_http)
        unknown = await every_http.post(
            "/v1/messages", json={"model": "nope", "messages": HELLO}, headers=headers
        )
        assert unknown.status_code == 400
        assert unknown.json()["type"] == "error"
        assert unknown.json()["error"]["type"] == "invalid_request_error"
        assert unknown.headers["x-should-retry"] == "false"
        stateful = await every_http.post(
            "/v1/responses",
            json={"model": "gpt-4o", "input": "Hi", "previous_response_id": "resp_1"},
            headers=headers,
        )
        assert stateful.status_code == 404  # no response stored under that id
        assert stateful.json()["error"]["param"] == "previous_response_id"
        bad_block = await every_http.post(
            "/v1/messages",
            json={"model": "gemini-2.5-flash", "messages": [
                {"role": "user", "content": [{"type": "document", "source": {}}]}]},
            headers=headers,
        )  # fmt: skip
        assert bad_block.status_code == 400
        assert bad_block.json()["error"]["type"] == "invalid_request_error"

    @pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/responses"])
    async def test_upstream_client_errors_keep_status_and_message(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, endpoint: str
    ):
        claude.mode = "400"
        _, headers = await _key(every_http)
        body: dict[str, Any] = {"model": "claude-sonnet-4"}
        body.update({"input": "Hi"} if endpoint == "/v1/responses" else {"messages": HELLO})
        response = await every_http.post(endpoint, json=body, headers=headers)
        assert response.status_code == 400
        assert "prompt is too long" in response.json()["error"]["message"]

    async def test_an_openai_rate_limit_reaches_an_anthropic_client_as_one(
        self, every_http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        upstream.mode = "429"
        _, headers = await _key(every_http)
        response = await every_http.post(
            "/v1/messages", json={"model": "gpt-4o", "messages": HELLO}, headers=headers
        )
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert response.headers["x-should-retry"] == "true"


class TestCapsAndWarnings:
    @pytest.mark.parametrize(
        ("endpoint", "model", "fake", "field"),
        [
            ("/v1/messages", "claude-sonnet-4", "claude", "max_tokens"),
            ("/v1/chat/completions", "claude-sonnet-4", "claude", "max_tokens"),
            ("/v1/responses", "gemini-2.5-flash", "gemini", "maxOutputTokens"),
            ("/v1/responses", "gpt-4o", "openai", "max_output_tokens"),
        ],
    )
    async def test_a_clamped_cap_reaches_the_upstreams_own_field(
        self, every_http: httpx.AsyncClient, claude: FakeAnthropic, gemini: FakeGemini,
        upstream: FakeUpstream, endpoint: str, model: str, fake: str, field: str,
    ):  # fmt: skip
        _, headers = await _key(every_http, max_spend_usd=0.01)
        if endpoint == "/v1/responses":
            body: dict[str, Any] = {"model": model, "input": "Hi", "max_output_tokens": 60_000}
        else:
            body = {"model": model, "messages": HELLO, "max_tokens": 60_000}
        response = await every_http.post(endpoint, json=body, headers=headers)
        assert response.status_code == 200, response.text
        clamped = int(response.headers["x-tollgate-max-tokens-clamped"])
        assert 0 < clamped < 60_000
        seen = {"claude": claude, "gemini": gemini, "openai": upstream}[fake].seen[-1].body
        given = seen["generationConfig"][field] if fake == "gemini" else seen[field]
        assert given == clamped

    async def test_dropped_server_tools_are_named_in_a_warning(
        self, every_http: httpx.AsyncClient, gemini: FakeGemini
    ):
        _, headers = await _key(every_http)
        response = await every_http.post(
            "/v1/messages",
            json={"model": "gemini-2.5-flash", "max_tokens": 50, "messages": HELLO,
                  "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            headers=headers,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert "web_search" in response.headers["x-tollgate-warning"]
        assert "tools" not in gemini.seen[-1].body
