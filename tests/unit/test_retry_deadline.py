"""The attempts of one call share one deadline: timed-out attempts on several accounts take one
timeout together, not one each."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.errors import UpstreamTimeout
from api.gateway.providers.base import UpstreamRequest, UpstreamResponse
from api.gateway.resilience import PooledProvider, RetryPolicy, Trace
from api.gateway.routing import Account, Router, TenantRouting


class Stalling:
    """An account's upstream that answers nothing until its own timeout."""

    name = "openai"
    dialect = "openai"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.calls = 0

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.calls += 1
        await asyncio.sleep(self.timeout)
        raise UpstreamTimeout("The openai provider did not answer in time.")

    async def open_stream(self, request: UpstreamRequest) -> None:
        raise NotImplementedError


def _pooled(upstreams: list[Stalling], policy: RetryPolicy) -> PooledProvider:
    accounts = [Account(f"a{i}", upstream) for i, upstream in enumerate(upstreams)]  # type: ignore[arg-type]
    trace = Trace(TenantRouting(), None, ("openai",))
    return PooledProvider(Router({"openai": accounts}), policy, "openai", "gpt-4o", trace)


REQUEST = UpstreamRequest("/chat/completions", {}, stream=False)


class TestSharedDeadline:
    async def test_timed_out_attempts_share_the_calls_deadline(self):
        upstreams = [Stalling(0.2) for _ in range(3)]
        policy = RetryPolicy(max_attempts=3, base_delay=0, max_total=10, attempts_total=0.3)
        pooled = _pooled(upstreams, policy)
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await pooled.send(REQUEST)
        assert 0.28 < time.monotonic() - started < 0.37  # not 2 or 3 x 0.2 s
        assert sum(upstream.calls for upstream in upstreams) == 2  # the second cut short

    async def test_without_a_deadline_each_account_gets_its_own_timeout(self):
        upstreams = [Stalling(0.1) for _ in range(3)]
        pooled = _pooled(upstreams, RetryPolicy(max_attempts=3, base_delay=0, max_total=10))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await pooled.send(REQUEST)
        assert time.monotonic() - started >= 0.3
        assert [upstream.calls for upstream in upstreams] == [1, 1, 1]
