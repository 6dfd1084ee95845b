"""The attempt loop: retries and failover across a provider's accounts (SPEC §5.2, §6).

`PooledProvider` is what `Call.provider` is for a real key: it speaks the `Provider` protocol,
so every route's `provider.send` / `provider.open_stream` goes through it unchanged, and tries
the provider's accounts (`api/gateway/routing.py`) in turn:

- retried: 429 (after its `retry-after` / Gemini RetryInfo, else a backoff), 5xx, 503/529
  overloaded, timeouts, connection errors and streams that break before their first event;
  exponential backoff with full jitter, at most `retry_max_attempts` attempts and
  `retry_max_total_seconds` of waiting; a retry moves to another ready account first. All the
  attempts of a call share one deadline (`attempts_total`, the upstream total timeout): a
  retry runs only in what time is left, so N attempts that time out take one timeout, not N.
- never retried: other 4xx (the client's), and `insufficient_quota` on the same account (it
  moves to another account, if any).
- 429 and quota errors cool the account down; every failure lowers its health score.

A stream is opened and its first event read before `open_stream` returns, so a stream that
fails before its first byte reaches the client is retried like a refused request; after that
the relay ends it with a well-formed error in the client's family.

Failing over to another provider is a step above this one: `api/gateway/failover.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from api.errors import (
    AppError,
    CapacityQueueFull,
    QuotaExhausted,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from api.gateway.catalog import ModelEntry
from api.gateway.providers.base import (
    ByteStream,
    Provider,
    UpstreamRequest,
    UpstreamResponse,
)
from api.gateway.routing import Account, Router, TenantRouting
from api.gateway.sse import SSEEvent
from api.shield import service as shield_service
from api.shield.engine import ShieldTimeout

logger = logging.getLogger("tollgate.gateway")
T = TypeVar("T")

RETRIES_HEADER = "X-Gateway-Retries"
FAILOVER_FROM_HEADER = "X-Gateway-Failover-From"
FAILOVER_TO_HEADER = "X-Gateway-Failover-To"
SHIELD_HEADER = "X-Tollgate-Shield"
DIALECT_OF = {
    "openai": "openai",
    "deepseek": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
}
_QUOTA_COOLDOWN_SECONDS = 300.0
_SESSION_HEADERS = ("x-session-id", "session_id", "session-id")
_RAW_SESSION_HEADERS = frozenset(name.encode() for name in _SESSION_HEADERS)
_SESSION_FIELDS = ("session_id", "conversation_id", "prompt_cache_key")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_total: float = 20.0
    cooldown: float = 20.0
    attempts_total: float | None = None  # every attempt of a call, back to back

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base x 2^retry)] (retry counts from 0)."""
        cap = min(self.max_delay, self.base_delay * (2**retry))
        return random.uniform(0, cap)


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    account: str
    status: int  # 200, or the status of the error it ended with
    reason: str | None  # the error code that moved the request on
    ms: int
    began: float = 0.0  # time.perf_counter() when it started (for the request's trace)

    def as_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "account": self.account,
                "status": self.status, "reason": self.reason, "ms": self.ms}  # fmt: skip


@dataclass(slots=True)
class Trace:
    """Every attempt of one request, for its headers and its usage event."""

    tenant: TenantRouting
    session: str | None
    dialects: Collection[str]
    attempts: list[Attempt] = field(default_factory=list)
    account: str | None = None  # the account that answered
    failover_from: str | None = None  # "provider/model" the request was for, after a failover
    tried_models: set[str] = field(default_factory=set)
    alternates: list[ModelEntry] | None = None  # computed at the first failure (failover.py)
    # What the request needs of an account ("audio"); only accounts declaring it serve it,
    # when any account of the provider declares it.
    capability: str | None = None
    # Set by `failover.serve`: whether it will answer a failure from another provider. Only a
    # caller that will run the answer again can fail over (any other caller of
    # `Call.failures_recorded` gets its failures metered as before).
    fails_over: Callable[[AppError], bool] | None = None
    # The tenant's secret shield could not mask in time and fails open: sent unmasked.
    unmasked: bool = False

    @property
    def retries(self) -> int:
        return max(len(self.attempts) - 1, 0)

    def headers(self, provider: str, model: str) -> dict[str, str]:
        out: dict[str, str] = {}
        if len(self.attempts) > 1:
            out[RETRIES_HEADER] = str(self.retries)
        if self.failover_from is not None:
            out[FAILOVER_FROM_HEADER] = self.failover_from
            out[FAILOVER_TO_HEADER] = f"{provider}/{model}"
        if self.unmasked:
            out[SHIELD_HEADER] = "unmasked: masking did not complete in time (fail open)"
        return out

    def summary(self) -> str | None:
        """The attempts as the usage event stores them (JSON), when there was more than one."""
        if len(self.attempts) < 2:
            return None
        return orjson.dumps([a.as_json() for a in self.attempts[-20:]]).decode()


def session_key(headers: Any, body: dict[str, Any]) -> str | None:
    """`x-session-id` / `session_id` header, or `session_id` / `conversation_id` /
    `prompt_cache_key` (also inside `metadata`) in the body."""
    raw = getattr(headers, "raw", None)
    if raw is not None:  # Starlette's headers: one pass over the list instead of three lookups
        for name, value in raw:
            if name in _RAW_SESSION_HEADERS and value:
                text: str = value.decode("latin-1")
                return text[:200]
    else:
        for name in _SESSION_HEADERS:
            value = headers.get(name)
            if value:
                return str(value)[:200]
    for source in (body, body.get("metadata")):
        if isinstance(source, dict):
            for name in _SESSION_FIELDS:
                value = source.get(name)
                if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                    return str(value)[:200]
    return None


def required_capability(body: dict[str, Any]) -> str | None:
    """What a request needs beyond text: `"audio"` for Chat Completions audio output."""
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        return "audio"
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    retry: bool  # worth another attempt (on this account after a wait, or on another)
    same_account: bool  # may the same account be tried again
    penalize: bool  # counts against the account's health
    cooldown: float | None  # cool the account down this long


def retry_after_seconds(error: AppError) -> float | None:
    value = error.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None  # "inf" waits forever


def classify(error: AppError, policy: RetryPolicy) -> Decision:
    if isinstance(error, QuotaExhausted):
        return Decision(True, False, True, _QUOTA_COOLDOWN_SECONDS)
    if isinstance(error, RateLimited):
        hint = retry_after_seconds(error)
        return Decision(True, True, True, policy.cooldown if hint is None else hint)
    if isinstance(error, UpstreamError | UpstreamUnavailable | UpstreamTimeout):
        return Decision(True, True, True, None)
    return Decision(False, False, False, None)  # the client's 4xx, bad input


def failover_worthy(error: AppError) -> bool:
    return isinstance(
        error,
        (RateLimited | UpstreamError | UpstreamUnavailable | UpstreamTimeout, CapacityQueueFull),
    )


class PrimedStream:
    """An opened upstream stream whose first event has already been read."""

    def __init__(self, stream: Any, iterator: AsyncIterator[SSEEvent], first: SSEEvent) -> None:
        self._stream = stream
        self._iterator = iterator
        self._first = first

    async def events(self) -> AsyncIterator[SSEEvent]:
        yield self._first
        async for event in self._iterator:
            yield event

    def rest(self) -> AsyncIterator[SSEEvent]:
        rest: AsyncIterator[SSEEvent] = self._stream.rest()
        return rest

    def release(self) -> None:
        self._stream.release()

    def close(self) -> None:
        self._stream.close()


def _first_event_error(provider: str, event: SSEEvent) -> AppError | None:
    """An error as the very first event: the stream failed before it began."""
    if event.event == b"error" or event.data.startswith(b'{"error"'):
        kind = b"overloaded" in event.data or b"UNAVAILABLE" in event.data
        if kind:
            return UpstreamUnavailable(f"The {provider} provider is overloaded.")
        if b"rate_limit" in event.data:
            return RateLimited(f"The {provider} provider is rate limiting requests.")
        return UpstreamError(f"The {provider} stream failed before it began.")
    return None


async def _open_primed(provider: Provider, request: UpstreamRequest) -> PrimedStream:
    stream = await provider.open_stream(request)
    iterator = stream.events().__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        stream.close()
        raise UpstreamError(f"The {provider.name} stream ended before it began.") from None
    except BaseException:
        stream.close()
        raise
    failure = _first_event_error(provider.name, first)
    if failure is not None:
        stream.close()
        raise failure
    return PrimedStream(stream, iterator, first)


@dataclass(slots=True)
class _Attempts:
    deadline: float  # for waiting between attempts
    ends: float  # for the attempts themselves
    count: int = 0
    last: AppError | None = None
    failed: set[str] = field(default_factory=set)  # accounts that failed this request
    done_with: set[str] = field(default_factory=set)  # accounts not to try again (quota)


class PooledProvider:
    """The `Provider` of a call: tries the accounts of one provider (see the module doc)."""

    def __init__(
        self,
        router: Router,
        policy: RetryPolicy,
        name: str,
        model: str,
        trace: Trace,
    ) -> None:
        self._router = router
        self._policy = policy
        self.name = name
        self.dialect = DIALECT_OF[name]
        self._model = model
        self._trace = trace
        self.account: Account | None = None

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        request = await self._shielded(request)
        return await self._run(lambda provider: provider.send(request))

    async def open_stream(self, request: UpstreamRequest) -> PrimedStream:
        request = await self._shielded(request)
        return await self._run(lambda provider: _open_primed(provider, request))

    async def open_bytes(self, request: UpstreamRequest) -> ByteStream:
        request = await self._shielded(request)
        return await self._run(lambda provider: provider.open_bytes(request))

    async def _shielded(self, request: UpstreamRequest) -> UpstreamRequest:
        """The request with the tenant's secret shield applied to every string of its body
        (an upload's text fields; its files are not text), once, before any attempt."""
        shield = self._trace.tenant.shield
        if shield is None:
            return request
        try:
            body, _ = await shield.mask_body_async(request.body)
        except ShieldTimeout as timeout:
            if not shield.fail_open:
                raise shield_service.failed(timeout.detector) from None
            logger.warning("the secret shield timed out (%s); sent unmasked (fail open)",
                           timeout.detector)  # fmt: skip
            self._trace.unmasked = True
            return request
        return request if body is request.body else dataclasses.replace(request, body=body)

    async def _run(self, operation: Callable[[Provider], Awaitable[T]]) -> T:
        router, policy, trace = self._router, self._policy, self._trace
        started = time.monotonic()
        deadline = started + policy.max_total
        ends = math.inf if policy.attempts_total is None else started + policy.attempts_total
        state: _Attempts | None = None  # made at the first failure: the happy path needs none
        if trace.session is not None:  # its account, as every process knows it
            await router.recall(self.name, trace.tenant, trace.session)
        while True:
            if state is None:
                ready, _ = router.choose(
                    self.name, trace.tenant, session=trace.session, capability=trace.capability
                )
                if ready:
                    account = ready[0]
                else:
                    state = _Attempts(deadline, ends)
                    account = await self._next_account(state)
            else:
                account = await self._next_account(state)
            account.counted()
            began = time.perf_counter()
            try:
                if state is None or state.ends == math.inf:
                    result = await operation(account.provider)
                else:
                    result = await self._within(state.ends, operation(account.provider))
            except AppError as error:
                if state is None:
                    state = _Attempts(deadline, ends)
                self._failed(state, account, error, time.perf_counter() - began)
                continue
            elapsed = time.perf_counter() - began
            account.health.succeeded(elapsed)
            trace.attempts.append(
                Attempt(self.name, self._model, account.name, 200, None, int(elapsed * 1000), began)
            )
            trace.account = account.name
            self.account = account
            router.stick(trace.session, account)
            return result

    async def _next_account(self, state: _Attempts) -> Account:
        """The account for the next attempt, after any wait for one (backoff, cooldown)."""
        router, last = self._router, state.last
        if last is not None and time.monotonic() >= state.ends:
            raise self._final(last)
        while True:
            ready, recovers = router.choose(
                self.name, self._trace.tenant, session=self._trace.session,
                exclude=state.done_with, capability=self._trace.capability,
            )  # fmt: skip
            if ready:
                break
            remaining = state.deadline - time.monotonic()
            if last is not None and (recovers == 0.0 or recovers - time.monotonic() > remaining):
                raise self._final(last)
            try:
                await router.wait_for_capacity(
                    recovers, remaining if last is not None else router.capacity_wait
                )
            except CapacityQueueFull as full:
                raise self._final(last or full) from None
        if not state.failed:
            return ready[0]
        fresh = [account for account in ready if account.name not in state.failed]
        if fresh or last is None:
            return fresh[0] if fresh else ready[0]
        # Only accounts that failed already: back off first. (A retry hint was honoured as
        # the account's cooldown: it was not ready until then.)
        delay = self._policy.backoff(state.count - 1)
        if time.monotonic() + delay > state.deadline:
            raise self._final(last)
        await asyncio.sleep(delay)
        return ready[0]

    async def _within(self, ends: float, attempt: Awaitable[T]) -> T:
        """A retry, given what is left of the call's time rather than a timeout of its own."""
        try:
            async with asyncio.timeout(ends - time.monotonic()):
                return await attempt
        except TimeoutError:
            raise UpstreamTimeout(f"The {self.name} provider did not answer in time.") from None

    def _failed(self, state: _Attempts, account: Account, error: AppError, took: float) -> None:
        """Record a failed attempt; raise when it is the last one."""
        state.count += 1
        decision = classify(error, self._policy)
        self._trace.attempts.append(
            Attempt(self.name, self._model, account.name, error.status_code,
                    error.public_code, int(took * 1000), time.perf_counter() - took)
        )  # fmt: skip
        if decision.penalize:
            account.health.failed()
        if decision.cooldown:
            self._router.cool(account, decision.cooldown)
        if not decision.retry:
            self._trace.account = account.name
            raise self._final(error) from None
        state.last = error
        state.failed.add(account.name)
        if not decision.same_account:
            state.done_with.add(account.name)
        if state.count >= self._policy.max_attempts:  # waits are bounded in _next_account
            raise self._final(error) from None
        logger.info("%s account %s failed (%s); retrying", self.name, account.name,
                    error.public_code)  # fmt: skip

    def _final(self, error: AppError) -> AppError:
        """The error the client gets, carrying the attempt count."""
        if len(self._trace.attempts) > 1:
            error.headers = {**error.headers, RETRIES_HEADER: str(self._trace.retries)}
        return error
