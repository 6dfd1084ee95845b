"""The SDK's request loop, over httpx.MockTransport (the process boundary)."""

from __future__ import annotations

import inspect

import httpx
import pytest
import tollgate
from tollgate._http import retry_delay, should_retry
from tollgate.resources.keys import AsyncKeys, Keys

KEY = {
    "object": "key", "id": "k1", "name": "a", "scope": "standard", "test": False,
    "status": "active", "prefix": "qlk_live_abcd", "last_four": "wxyz",
    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
}  # fmt: skip


def _client(handler, max_retries: int = 2) -> tollgate.Client:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return tollgate.Client(
        api_key="qlk_live_x", base_url="http://t", http_client=http, max_retries=max_retries
    )


def _error(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": "nope", "type": "x", "code": code, "param": "name"}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req_1", **headers})


class TestRetries:
    def test_server_errors_are_retried_with_the_same_idempotency_key(self):
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if len(seen) < 3:
                return _error(500, "internal_error", **{"retry-after-ms": "1"})
            return httpx.Response(201, json=KEY)

        key = _client(handler).keys.create(name="a")
        assert key.id == "k1"
        assert len(seen) == 3
        assert len({r.headers["idempotency-key"] for r in seen}) == 1
        assert seen[0].headers["authorization"] == "Bearer qlk_live_x"

    def test_should_retry_false_is_obeyed(self):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            return _error(429, "rate_limited", **{"x-should-retry": "false"})

        with pytest.raises(tollgate.RateLimitError) as caught:
            _client(handler).keys.retrieve("k1")
        assert calls == 1
        assert (caught.value.code, caught.value.request_id) == ("rate_limited", "req_1")

    def test_client_errors_are_not_retried_and_map_to_classes(self):
        for status, cls in [
            (400, tollgate.BadRequestError),
            (401, tollgate.AuthenticationError),
            (402, tollgate.PaymentRequiredError),
            (403, tollgate.PermissionDeniedError),
            (404, tollgate.NotFoundError),
        ]:
            calls: list[httpx.Request] = []

            def handler(
                request: httpx.Request, status: int = status, calls: list[httpx.Request] = calls
            ) -> httpx.Response:
                calls.append(request)
                return _error(status, "x")

            with pytest.raises(cls) as caught:
                _client(handler).keys.retrieve("k1")
            assert len(calls) == 1
            assert caught.value.param == "name"

    def test_connection_errors_give_up_after_the_retries(self):
        calls = 0

        def handler(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ConnectError("refused", request=request)

        with pytest.raises(tollgate.APIConnectionError):
            _client(handler, max_retries=1).keys.list()  # one backoff of at most 0.5 s
        assert calls == 2

    def test_delay_rules(self):
        assert retry_delay(0, httpx.Response(429, headers={"retry-after": "2"})) == 2.0
        assert retry_delay(0, httpx.Response(429, headers={"retry-after-ms": "250"})) == 0.25
        assert 0.375 <= retry_delay(0, None) <= 0.5
        assert retry_delay(10, None) <= 8.0
        assert should_retry(httpx.Response(503))
        assert not should_retry(httpx.Response(400))
        assert not should_retry(httpx.Response(500, headers={"x-should-retry": "false"}))


class TestParity:
    def test_sync_and_async_keys_have_the_same_signatures(self):
        public = [name for name in vars(Keys) if not name.startswith("_")]
        assert public == [name for name in vars(AsyncKeys) if not name.startswith("_")]
        for name in public:
            sync_params = inspect.signature(getattr(Keys, name)).parameters
            async_params = inspect.signature(getattr(AsyncKeys, name)).parameters
            assert sync_params == async_params, name

    def test_omitted_is_not_null(self):
        bodies: list[bytes] = []

        def handler(request: httpx.Request) -> httpx.Response:
            bodies.append(request.content)
            return httpx.Response(200, json=KEY)

        client = _client(handler)
        client.keys.update("k1", name="b")
        client.keys.update("k1", max_spend_usd=None)
        assert bodies == [b'{"name":"b"}', b'{"max_spend_usd":null}']
