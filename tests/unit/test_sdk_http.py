"""The SDK's request loop, errors, streams and webhooks, over httpx.MockTransport (the process
boundary); the clock the retries sleep on is recorded instead of slept."""

from __future__ import annotations

import json
import sys

import httpx
import pytest
import tollgate
from tollgate import _http, webhooks
from tollgate._http import retry_delay, should_retry
from tollgate.types import ContentBlockDeltaEvent, MessageCompletedEvent, ToolResultEvent

KEY = {
    "object": "key", "id": "k1", "name": "a", "scope": "standard", "test": False,
    "status": "active", "prefix": "qlk_live_abcd", "last_four": "wxyz",
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
}  # fmt: skip
THREAD = {
    "object": "thread", "id": "t1", "key_id": "k1", "system": None, "metadata": {},
    "message_count": 0, "indexed": True,
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
}  # fmt: skip
MESSAGE = {
    "object": "thread.message", "id": "m2", "thread_id": "t1", "turn_id": "m1", "seq": 1,
    "role": "assistant", "content": [{"type": "text", "text": "Hi there"}],
    "model": "gpt-4o-mini", "provider": "openai", "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 2, "cost_micros": 7, "cost_usd": 0.000007},
    "created_at": "2026-01-01T00:00:00Z",
}  # fmt: skip


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry loop's waits, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(_http.time, "sleep", waited.append)
    return waited


def _client(handler, max_retries: int = 2) -> tollgate.Tollgate:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return tollgate.Tollgate(
        api_key="qlk_live_x", base_url="http://t", http_client=http, max_retries=max_retries
    )


def _error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": "nope", "type": "x", "code": code, "param": "name"}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_1", **headers})


class TestRetries:
    def test_server_errors_are_retried_with_the_same_idempotency_key(self, sleeps):
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if len(seen) < 3:
                return _error(500, "internal_error", **{"retry-after-ms": "20"})
            return httpx.Response(201, json=KEY)

        key = _client(handler).keys.create(name="a")
        assert key.id == "k1"
        assert len(seen) == 3
        assert len({r.headers["idempotency-key"] for r in seen}) == 1
        assert seen[0].headers["authorization"] == "Bearer qlk_live_x"
        assert sleeps == [0.02, 0.02]

    def test_each_call_gets_its_own_idempotency_key_or_the_callers(self):
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(201, json=KEY)

        client = _client(handler)
        client.keys.create(name="a")
        client.keys.create(name="a")
        client.keys.create(name="a", idempotency_key="signup-u42")
        client.keys.retrieve("k1")
        keys = [r.headers.get("idempotency-key") for r in seen]
        assert keys[0] != keys[1]
        assert keys[2:] == ["signup-u42", None]

    def test_should_retry_false_is_obeyed(self, sleeps):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return _error(429, "rate_limited", **{"x-should-retry": "false"})

        with pytest.raises(tollgate.RateLimitError) as caught:
            _client(handler).keys.retrieve("k1")
        assert calls == 1
        assert (caught.value.code, caught.value.request_id) == ("rate_limited", "req_1")
        assert caught.value.status_code == 429

    def test_should_retry_true_retries_a_status_that_is_otherwise_final(self, sleeps):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                return _error(400, "x", **{"x-should-retry": "true", "retry-after": "1"})
            return httpx.Response(200, json=KEY)

        assert _client(handler).keys.retrieve("k1").id == "k1"
        assert sleeps == [1.0]

    def test_retries_give_up_after_max_retries(self, sleeps):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return _error(503, "upstream_unavailable")

        with pytest.raises(tollgate.InternalServerError):
            _client(handler, max_retries=3).keys.retrieve("k1")
        assert calls == 4
        assert len(sleeps) == 3
        assert all(0.375 <= s <= 8 for s in sleeps)
        assert sleeps[0] < sleeps[2]

    def test_connection_errors_give_up_after_the_retries(self, sleeps):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ConnectError("refused", request=request)

        with pytest.raises(tollgate.APIConnectionError) as caught:
            _client(handler, max_retries=1).keys.list()
        assert calls == 2
        assert not isinstance(caught.value, tollgate.APITimeoutError)

    def test_a_timeout_is_an_api_timeout_error(self, sleeps):
        def handler(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("slow", request=request)

        with pytest.raises(tollgate.APITimeoutError):
            _client(handler, max_retries=1).keys.retrieve("k1")
        assert len(sleeps) == 1

    def test_a_post_tollgate_deduplicates_is_retried_after_a_lost_answer(self, sleeps):
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if len(seen) == 1:
                raise httpx.RemoteProtocolError("dropped", request=request)
            return httpx.Response(201, json=KEY)

        _client(handler).keys.create(name="a")
        assert len(seen) == 2
        assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]

    def test_a_post_tollgate_does_not_deduplicate_is_not_repeated_after_it_may_have_arrived(
        self, sleeps
    ):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ReadError("reset", request=request)

        with pytest.raises(tollgate.APIConnectionError):
            _client(handler).threads.create()
        assert calls == 1

    def test_a_post_that_never_left_is_retried_whatever_the_route(self, sleeps):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(201, json=THREAD)

        assert _client(handler).threads.create().id == "t1"
        assert calls == 2

    def test_delay_rules(self):
        assert retry_delay(0, httpx.Response(429, headers={"retry-after": "2"})) == 2.0
        assert retry_delay(0, httpx.Response(429, headers={"retry-after-ms": "250"})) == 0.25
        assert 0.375 <= retry_delay(0, httpx.Response(429, headers={"retry-after": "999"})) <= 0.5
        assert 0.375 <= retry_delay(0, None) <= 0.5
        assert retry_delay(10, None) <= 8.0
        assert should_retry(httpx.Response(503))
        assert should_retry(httpx.Response(409))
        assert not should_retry(httpx.Response(400))
        assert not should_retry(httpx.Response(500, headers={"x-should-retry": "false"}))


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (400, "invalid_request", tollgate.BadRequestError),
            (401, "invalid_api_key", tollgate.AuthenticationError),
            (402, "budget_exceeded", tollgate.BudgetExceededError),
            (402, "payment_required", tollgate.PaymentRequiredError),
            (403, "insufficient_scope", tollgate.PermissionDeniedError),
            (404, "not_found", tollgate.NotFoundError),
            (413, "request_too_large", tollgate.RequestTooLargeError),
            (422, "unprocessable", tollgate.UnprocessableEntityError),
        ],
    )
    def test_each_status_has_its_class_and_is_not_retried(self, status, code, cls):
        calls: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            return _error(status, code, **{"x-should-retry": "false"})

        with pytest.raises(cls) as caught:
            _client(handler).keys.retrieve("k1")
        error = caught.value
        assert len(calls) == 1
        assert (error.status_code, error.code, error.param) == (status, code, "name")
        assert error.request_id == "req_1"
        assert isinstance(error, tollgate.APIStatusError)

    def test_a_budget_error_is_not_a_suspension(self):
        assert not issubclass(tollgate.BudgetExceededError, tollgate.PaymentRequiredError)
        assert not issubclass(tollgate.PaymentRequiredError, tollgate.BudgetExceededError)

    def test_a_body_that_is_not_json_still_raises_by_status(self):
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(502, text="bad gateway")

        with pytest.raises(tollgate.InternalServerError) as caught:
            _client(handler, max_retries=0).keys.retrieve("k1")
        assert caught.value.body == "bad gateway"
        assert caught.value.code is None


class TestClient:
    def test_key_and_url_come_from_the_environment(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("TOLLGATE_API_KEY", "qlk_live_env")
        monkeypatch.setenv("TOLLGATE_BASE_URL", "https://tollgate.example/v1/")
        client = tollgate.Tollgate()
        assert (client.api_key, client.base_url) == ("qlk_live_env", "https://tollgate.example")
        monkeypatch.delenv("TOLLGATE_API_KEY")
        with pytest.raises(tollgate.TollgateError, match="TOLLGATE_API_KEY"):
            tollgate.AsyncTollgate()

    def test_with_options_shares_the_connections_and_changes_the_key(self):
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json=KEY)

        master = _client(handler)
        user = master.with_options(api_key="qlk_live_user", max_retries=0)
        user.keys.retrieve_self()
        master.keys.retrieve_self()
        assert [r.headers["authorization"] for r in seen] == [
            "Bearer qlk_live_user", "Bearer qlk_live_x",
        ]  # fmt: skip
        assert user._client is master._client
        assert (user.max_retries, master.max_retries) == (0, 2)

    def test_omitted_is_not_null(self):
        bodies: list[bytes] = []

        def handler(request: httpx.Request) -> httpx.Response:
            bodies.append(request.content)
            return httpx.Response(200, json=KEY)

        client = _client(handler)
        client.keys.update("k1", name="b")
        client.keys.update("k1", max_spend_usd=None)
        assert bodies == [b'{"name":"b"}', b'{"max_spend_usd":null}']

    def test_ids_are_one_path_segment(self):
        paths: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.raw_path.decode())
            return httpx.Response(200, json=KEY)

        _client(handler).keys.retrieve("a/../b?c")
        assert paths == ["/v1/keys/a%2F..%2Fb%3Fc"]

    def test_list_pages_are_walked_with_the_cursor(self):
        queries: list[dict[str, str]] = []

        def handler(request: httpx.Request) -> httpx.Response:
            queries.append(dict(request.url.params))
            cursor = request.url.params.get("cursor")
            following = "k1" if cursor is None else "k2"
            body = {"object": "list", "data": [{**KEY, "id": cursor or "k0"}],
                    "has_more": cursor != "k2", "next_cursor": following}  # fmt: skip
            return httpx.Response(200, json=body)

        page = _client(handler).keys.list(limit=1)
        assert [k.id for k in page.data] == ["k0"]
        assert [k.id for k in page] == ["k0", "k1", "k2"]
        assert queries == [{"limit": "1"}, {"limit": "1", "cursor": "k1"},
                           {"limit": "1", "cursor": "k2"}]  # fmt: skip

    def test_official_sdks_are_configured_for_the_gateway(self):
        client = tollgate.Tollgate(api_key="qlk_live_m", base_url="http://tollgate.test:8080")
        openai = client.openai(api_key="qlk_live_user")
        assert (str(openai.base_url), openai.api_key) == (
            "http://tollgate.test:8080/v1/", "qlk_live_user",
        )  # fmt: skip
        anthropic = tollgate.AsyncTollgate(api_key="qlk_live_m", base_url="http://h").anthropic()
        assert (str(anthropic.base_url), anthropic.api_key) == ("http://h", "qlk_live_m")

    def test_a_missing_official_sdk_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setitem(sys.modules, "anthropic", None)  # as if not installed
        client = tollgate.Tollgate(api_key="qlk_live_m")
        with pytest.raises(tollgate.TollgateError, match=r"tollgate\[anthropic\]"):
            client.anthropic()


def _sse(*events: tuple[str, dict[str, object]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


class TestStreams:
    def _stream(self, body: bytes) -> tollgate.ThreadStream:
        def handler(request: httpx.Request) -> httpx.Response:
            assert json.loads(request.content)["stream"] is True
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

        return _client(handler).threads.messages.stream("t1", model="m", content="Hi")

    def test_events_are_typed_and_end_with_the_stored_answer(self):
        body = _sse(
            ("message_start", {"type": "message_start", "message": {"id": "x"}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Hi "}}),
            ("ping", {"type": "ping"}),
            ("thread.tool_result", {"type": "thread.tool_result", "tool_use_id": "c1",
                                    "name": "get_weather", "content": "sunny"}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "there"}}),
            ("thread.message.completed", {"type": "thread.message.completed",
                                          "message": MESSAGE}),
        )  # fmt: skip
        with self._stream(body) as stream:
            events = list(stream)
        assert [e.type for e in events] == [
            "message_start", "content_block_delta", "ping", "thread.tool_result",
            "content_block_delta", "thread.message.completed",
        ]  # fmt: skip
        assert isinstance(events[1], ContentBlockDeltaEvent)
        assert isinstance(events[3], ToolResultEvent)
        assert events[3].name == "get_weather"
        assert isinstance(events[-1], MessageCompletedEvent)
        assert events[-1].message.text == "Hi there"
        assert stream.get_final_message().id == "m2"

    def test_text_deltas_and_the_final_message(self):
        body = _sse(
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "Hi "}}),
            ("thread.message.completed", {"type": "thread.message.completed",
                                          "message": MESSAGE}),
        )  # fmt: skip
        stream = self._stream(body)
        assert list(stream.text_deltas()) == ["Hi "]
        assert stream.get_final_message().text == "Hi there"

    def test_an_error_event_raises_with_its_type(self):
        body = _sse(
            ("message_start", {"type": "message_start", "message": {}}),
            ("error", {"type": "error",
                       "error": {"type": "billing_error", "message": "A limit was reached."}}),
        )  # fmt: skip
        stream = self._stream(body)
        with pytest.raises(tollgate.APIStreamError) as caught:
            stream.get_final_message()
        assert (caught.value.type, caught.value.message) == (
            "billing_error",
            "A limit was reached.",
        )

    def test_a_stream_cut_short_has_no_final_message(self):
        stream = self._stream(_sse(("message_start", {"type": "message_start", "message": {}})))
        with pytest.raises(tollgate.APIError, match=r"thread\.message\.completed"):
            stream.get_final_message()


class TestWebhooks:
    BODY = b'{"tool_call_id": "c1", "tool": "get_weather", "input": {"city": "Lisbon"}}'

    def test_a_signed_body_verifies(self):
        header = webhooks.sign("whsec", self.BODY, timestamp=1_000_000)
        webhooks.verify("whsec", header, self.BODY, now=1_000_299)
        webhooks.verify("whsec", header, self.BODY.decode(), now=999_800)

    @pytest.mark.parametrize(
        ("header", "why"),
        [
            (None, "No X-Tollgate-Signature"),
            ("v1=abc", "needs t= and v1="),
            ("t=soon,v1=abc", "not a number"),
            ("t=1000000,v1=" + "0" * 64, "does not match"),
        ],
    )
    def test_a_bad_header_is_refused(self, header, why):
        with pytest.raises(tollgate.WebhookVerificationError, match=why):
            webhooks.verify("whsec", header, self.BODY, now=1_000_000)

    def test_another_secret_another_body_or_an_old_timestamp_is_refused(self):
        header = webhooks.sign("whsec", self.BODY, timestamp=1_000_000)
        with pytest.raises(tollgate.WebhookVerificationError, match="does not match"):
            webhooks.verify("other", header, self.BODY, now=1_000_000)
        with pytest.raises(tollgate.WebhookVerificationError, match="does not match"):
            webhooks.verify("whsec", header, self.BODY + b" ", now=1_000_000)
        with pytest.raises(tollgate.WebhookVerificationError, match="300 s"):
            webhooks.verify("whsec", header, self.BODY, now=1_000_301)
        with pytest.raises(tollgate.WebhookVerificationError, match="10 s"):
            webhooks.verify("whsec", header, self.BODY, tolerance=10, now=1_000_011)

    def test_any_of_several_signatures_may_match(self):
        good = webhooks.sign("whsec", self.BODY, timestamp=5).split(",")[1]
        webhooks.verify("whsec", f"t=5,v1={'0' * 64},{good}", self.BODY, now=5)

    def test_it_checks_what_the_server_signs(self):
        from api.kit.webhooks import signature  # the server's own signer

        header = signature("tool-secret", self.BODY)
        webhooks.verify("tool-secret", header, self.BODY)


class TestAsyncClient:
    @staticmethod
    def _client(handler) -> tollgate.AsyncTollgate:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        return tollgate.AsyncTollgate(api_key="qlk_live_x", base_url="http://t", http_client=http)

    async def test_retries_reuse_the_idempotency_key(self, monkeypatch: pytest.MonkeyPatch):
        waited: list[float] = []

        async def sleep(seconds: float) -> None:
            waited.append(seconds)

        monkeypatch.setattr(_http.asyncio, "sleep", sleep)
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if len(seen) == 1:
                raise httpx.RemoteProtocolError("dropped", request=request)
            if len(seen) == 2:
                return _error(409, "conflict", **{"retry-after-ms": "5"})
            return httpx.Response(202, json={**KEY})

        key = await self._client(handler).keys.create(name="a")
        assert key.id == "k1"
        assert len({r.headers["idempotency-key"] for r in seen}) == 1
        assert len(waited) == 2
        assert waited[1] == 0.005

    async def test_pages_are_awaited_or_walked(self):
        def handler(request: httpx.Request) -> httpx.Response:
            cursor = request.url.params.get("cursor")
            body = {"object": "list", "data": [{**KEY, "id": cursor or "k0"}],
                    "has_more": cursor is None, "next_cursor": "k1"}  # fmt: skip
            return httpx.Response(200, json=body)

        client = self._client(handler)
        page = await client.keys.list()
        assert ([k.id for k in page.data], page.has_more) == (["k0"], True)
        assert [k.id async for k in client.keys.list()] == ["k0", "k1"]

    async def test_a_stream_error_event_raises(self):
        body = _sse(
            ("message_start", {"type": "message_start", "message": {}}),
            ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        )

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

        stream = await self._client(handler).threads.messages.stream("t1", model="m", content="x")
        first = await anext(stream)
        with pytest.raises(tollgate.APIStreamError) as caught:
            await anext(stream)
        assert (first.type, caught.value.type) == ("message_start", "overloaded_error")
        assert stream.response.is_closed
