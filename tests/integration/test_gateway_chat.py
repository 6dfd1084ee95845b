"""`POST /v1/chat/completions` through a real server to the fake OpenAI and DeepSeek upstreams."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.factories.chat import HELLO, timed_stream
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros, logs_when_settled, usage_when_settled
from tests.fakes.proxy import fake_proxy
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream, fixture, sse_events
from tools.testenv import free_port

GPT_4O = ("2.50", "1.25", "10.00")
DEEPSEEK = ("0.28", "0.028", "0.42")


async def _user(http: httpx.AsyncClient, **fields: Any) -> tuple[TenantFixture, dict[str, str]]:
    tenant = await create_tenant(http)
    key = await create_key(http, tenant, **fields)
    return tenant, bearer(key["secret"])


def _data_events(raw: bytes) -> list[bytes]:
    return [line[len(b"data: ") :] for line in raw.split(b"\n") if line.startswith(b"data: ")]


class TestNonStreaming:
    async def test_openai_response_is_relayed_and_metered_exactly(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        original = json.loads(
            fixture("openai-chat/02_response_nonstream_usage_cached_reasoning.json")
        )
        assert body == {**original, "provider": "openai"}
        assert response.headers["x-request-id"].startswith("req_")
        seen = upstream.seen[-1]
        assert seen.headers["Authorization"] == "Bearer sk-operator-openai"
        assert seen.body["model"] == "gpt-4o"
        usage = await usage_when_settled(http, tenant, 1)
        expected = expected_cost_micros(2417, 2304, 1093, GPT_4O)
        assert expected == 14093
        assert usage["totals"]["cost_micros"] == expected
        assert usage["totals"]["input_tokens"] == 2417
        assert usage["totals"]["cached_input_tokens"] == 2304
        assert usage["totals"]["output_tokens"] == 1093

    async def test_known_fields_pass_through_untouched_and_unknown_ones_are_dropped(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        known = {"metadata": {"a": "b"}, "temperature": 0.2, "seed": 7, "verbosity": "low"}
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO, "some_new_param": [1, 2], **known},
            headers=headers,
        )
        assert response.status_code == 200
        for name, value in known.items():
            assert upstream.seen[-1].body[name] == value
        assert "some_new_param" not in upstream.seen[-1].body
        assert "some_new_param" in response.headers["x-tollgate-warning"]

    async def test_deepseek_cache_hits_are_billed_at_the_cached_price(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "deepseek-chat", "messages": HELLO},
            headers=headers,
        )
        assert response.json()["provider"] == "deepseek"
        assert upstream.seen[-1].path == "/deepseek/chat/completions"
        usage = await usage_when_settled(http, tenant, 1)
        assert usage["totals"]["cost_micros"] == expected_cost_micros(1854, 1792, 96, DEEPSEEK)

    async def test_explicit_provider_prefix(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        _, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "openai/gpt-4o-2024-08-06", "messages": HELLO},
            headers=headers,
        )
        assert response.status_code == 200
        assert upstream.seen[-1].body["model"] == "gpt-4o-2024-08-06"


class TestStreaming:
    async def test_chunks_are_relayed_as_sent_and_usage_chunk_hidden(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO, "stream": True},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert upstream.seen[-1].body["stream_options"] == {"include_usage": True}
        recorded = [
            e.strip()[len(b"data: ") :]
            for e in sse_events("openai-chat/04_stream_text_include_usage.sse")
        ]
        without_usage = [e for e in recorded if b'"choices":[]' not in e]
        assert _data_events(response.content) == without_usage
        usage = await usage_when_settled(http, tenant, 1)
        assert usage["totals"]["cost_micros"] == expected_cost_micros(19, 0, 10, GPT_4O)

    async def test_client_that_asks_for_usage_gets_the_usage_chunk(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o", "messages": HELLO, "stream": True,
                "stream_options": {"include_usage": True},
            },
            headers=headers,
        )  # fmt: skip
        events = _data_events(response.content)
        assert json.loads(events[-2])["usage"]["prompt_tokens"] == 19
        assert events[-1] == b"[DONE]"

    async def test_deepseek_keep_alive_and_usage_on_the_finish_chunk(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "deepseek-reasoner", "messages": HELLO, "stream": True},
            headers=headers,
        )
        events = _data_events(response.content)
        assert b"keep-alive" not in response.content
        assert json.loads(events[1])["choices"][0]["delta"]["reasoning_content"] == "Compare"
        assert events[-1] == b"[DONE]"
        usage = await usage_when_settled(http, tenant, 1)
        assert usage["totals"]["cost_micros"] == expected_cost_micros(18, 0, 254, DEEPSEEK)

    async def test_first_chunk_arrives_before_the_upstream_pause_ends(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        _, headers = await _user(http)
        upstream.pause_after_first = 1.5
        body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
        timed = await timed_stream(http, "/v1/chat/completions", body, headers)
        assert 0 <= timed.first_after < 1.0, timed.first_after
        assert timed.total >= 1.5
        assert timed.rest[-1] == "data: [DONE]"

    async def test_abandoned_stream_is_read_on_and_billed_what_upstream_bills(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        upstream.mode, upstream.chunk_delay, upstream.words = "generate", 0.2, 20
        messages = [{"role": "system", "content": "Be brief."}, *HELLO]
        async with http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": messages, "stream": True},
            headers=headers,
        ) as response:
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data: ")
                if received == 6:
                    break  # leaving the block closes the connection part way through
        upstream.chunk_delay = 0.0  # the rest comes at once
        usage = await usage_when_settled(http, tenant, 1)
        # The gateway read the stream to its usage chunk: the upstream billed all 20 words,
        # and so does the gateway, exactly.
        assert upstream.disconnects == 0
        billed = upstream.reported[-1]
        assert billed["completion_tokens"] >= 20
        expected = expected_cost_micros(
            billed["prompt_tokens"], 0, billed["completion_tokens"], GPT_4O
        )
        assert usage["totals"]["cost_micros"] == expected
        assert usage["totals"]["output_tokens"] == billed["completion_tokens"]
        log = (await logs_when_settled(http, tenant, 1))[0]
        assert (log["status"], log["estimated"]) == (499, False)

    async def test_stream_dropped_mid_way_ends_with_an_error_event(
        self, http: httpx.AsyncClient, upstream: FakeUpstream
    ):
        tenant, headers = await _user(http)
        upstream.mode = "drop"
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO, "stream": True},
            headers=headers,
        )
        events = _data_events(response.content)
        assert json.loads(events[-2])["error"]["code"] == "upstream_error"
        assert events[-1] == b"[DONE]"
        log = (await logs_when_settled(http, tenant, 1))[0]
        assert log["status"] == 502
        assert log["estimated"] is True
        assert log["output_tokens"] == 1  # "Hello" made it through before the drop


class TestUpstreamErrors:
    @pytest.mark.parametrize(
        ("mode", "status", "code", "retry"),
        [
            ("400", 400, "context_length_exceeded", "false"),
            ("401", 502, "upstream_error", "true"),
            ("429", 429, "rate_limited", "true"),
            ("500", 502, "upstream_error", "true"),
            ("503", 503, "upstream_unavailable", "true"),
        ],
    )
    async def test_status_mapping(
        self, http: httpx.AsyncClient, upstream: FakeUpstream, mode: str, status: int, code: str,
        retry: str,
    ):  # fmt: skip
        tenant, headers = await _user(http)
        upstream.mode = mode
        for stream in (False, True):
            response = await http.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": HELLO, "stream": stream},
                headers=headers,
            )
            if mode == "429" and stream:
                # The only account is cooling down for the 3 s it was told: not asked again.
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "capacity_queue_full"
                assert response.headers["retry-after"] in ("2", "3")
                break
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == code
            assert response.headers["x-should-retry"] == retry
            assert "sk-operator" not in response.text
            if mode == "429":
                assert response.headers["retry-after"] == "3"
        if mode == "400":
            assert "maximum context length" in error["message"]
            assert error["param"] == "messages"
        logs = await logs_when_settled(http, tenant, 2)
        expected = {(503, 0), (429, 0)} if mode == "429" else {(status, 0)}
        assert {(log["status"], log["cost_micros"]) for log in logs} == expected

    async def test_connection_refused_is_502(self, gateway_settings: Settings):
        closed = gateway_settings.model_copy(
            update={"openai_base_url": f"http://127.0.0.1:{free_port()}/v1"}
        )
        with serve_in_thread(create_app(closed)) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                tenant, headers = await _user(http)
                for stream in (False, True):
                    response = await http.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o", "messages": HELLO, "stream": stream},
                        headers=headers,
                    )
                    assert response.status_code == 502
                    assert response.json()["error"]["code"] == "upstream_error"
                logs = await logs_when_settled(http, tenant, 2)
                assert {log["status"] for log in logs} == {502}

    async def test_timeout_is_504(self, http: httpx.AsyncClient, upstream: FakeUpstream):
        _, headers = await _user(http)
        upstream.mode, upstream.stall_seconds = "stall", 3.0  # read timeout is 2 s in tests
        response = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}, headers=headers
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"


class TestUpstreamProxy:
    async def test_upstream_calls_go_through_the_proxy_the_environment_names(
        self, gateway_settings: Settings, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
    ):
        async with fake_proxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            with serve_in_thread(create_app(gateway_settings)) as url:
                # The test's own client talks to the gateway directly.
                async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
                    _, headers = await _user(http)
                    for stream in (False, True):
                        body = {"model": "gpt-4o", "messages": HELLO, "stream": stream}
                        response = await http.post(
                            "/v1/chat/completions", json=body, headers=headers
                        )
                        assert response.status_code == 200
                        assert b'"error":{' not in response.content
        target = f"{upstream.openai_base_url}/chat/completions"
        # One connection to the proxy carried both (it records each connection's first line).
        assert proxy.lines == [f"POST {target} HTTP/1.1"]
        assert len(upstream.seen) == 2
