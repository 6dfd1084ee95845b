"""The request pipeline, the only orchestrator of a proxied call (SPEC §5.2 request flow):

authenticate (dependency) → key status → access control → budget → route → provider call →
meter → settle → usage event.

Every accepted request ends in exactly one usage event, errors included (cost 0). The event
is durable (`api/usage/ledger.py`) before the response's last byte is sent: `Call.finish` is
awaited before a body is returned, and before a stream's final event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth.service import Principal
from api.errors import (
    AppError,
    InternalError,
    InvalidModel,
    LimitsUnavailable,
    ModelNotAllowed,
    ProviderNotAllowed,
    ProviderNotConfigured,
)
from api.gateway import budget as budget_rules
from api.gateway import cache as response_cache
from api.gateway import exposure as exposure_rules
from api.gateway import semantic as semantic_cache
from api.gateway import traces
from api.gateway import usage as usage_rules
from api.gateway.budget import BudgetGuard, Demand, Reservation
from api.gateway.catalog import Catalog, ModelEntry, Route
from api.gateway.exposure import Exposure, UnknownFields
from api.gateway.pricing import FREE, Price, Usage, cost_micros
from api.gateway.providers.base import Provider, UpstreamStream
from api.gateway.providers.registry import ProviderRegistry
from api.gateway.relay import warning_header
from api.gateway.resilience import PooledProvider, RetryPolicy, Trace, required_capability
from api.gateway.routing import Router
from api.gateway.sse import SSEEvent
from api.gateway.traces import Timing
from api.metrics import Metrics
from api.usage.ledger import Ledger, UsageRecord

logger = logging.getLogger("tollgate.gateway")

# Tells the client its `max_tokens` was lowered to what the key's remaining budget affords.
CLAMP_HEADER = "x-tollgate-max-tokens-clamped"
# A stream whose client left is read on for the usage the provider bills (reasoning it never
# showed included), at most this long and this much; past either it is billed its worst case.
DRAIN_SECONDS = 30.0
DRAIN_BYTES = 8 * 1024 * 1024


class UsageReader(Protocol):
    """Reads a stream's own events for the usage its provider bills."""

    def feed(self, event: SSEEvent) -> Usage | None:
        """The final usage, once an event carries it."""
        ...

    def end(self) -> Usage | None:
        """The body ended: the usage, if the format reports it only then."""
        ...


class Spans(Protocol):
    """Exports a settled call's trace (`api/gateway/otel.py`)."""

    def export(self, call: Call, event: UsageRecord, ledger_ns: int) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Gateway:
    """The long-lived parts of the proxy, built once in the lifespan."""

    catalog: Catalog
    providers: ProviderRegistry
    ledger: Ledger
    budget: BudgetGuard
    metrics: Metrics
    # Upstream accounts, their health and the tenants' own keys; None: one account per provider
    # from the registry, no retries (what a bare `Gateway` in a test gets).
    router: Router | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Top-level request fields Tollgate does not know (`api/gateway/exposure.py`).
    unknown_fields: UnknownFields = "drop"
    # Where endpoints that keep state (stored responses) read and write it; None in a bare
    # `Gateway` (tests of the proxy alone), which stores nothing.
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    response_retention_days: int = 30
    audio_max_bytes: int = 25 * 1024 * 1024  # an upload's limit (`Settings.audio_max_bytes`)
    # Where the response cache keeps answers (`api/gateway/cache.py`); None: no cache.
    cache: response_cache.Store | None = None
    # The semantic cache's questions: their vectors (search's store and model) and each
    # tenant's list of them (`api/gateway/semantic.py`); None: no semantic cache.
    semantic: semantic_cache.PromptIndex | None = None
    semantic_entries: semantic_cache.Entries | None = None
    # Where request traces go beside the database (OpenTelemetry, `api/gateway/otel.py`).
    spans: Spans | None = None
    # Settlements of requests whose client went away; awaited at shutdown.
    settling: set[asyncio.Task[int]] = field(default_factory=set)
    # Token counts per key in the current minute, in this process (`count_tokens`).
    counting: dict[uuid.UUID, tuple[int, int]] = field(default_factory=dict)
    # The holds of calls in flight, kept from expiring until they settle (`_keep_holding`).
    holding: dict[int, Reservation] = field(default_factory=dict)
    refresher: asyncio.Task[None] | None = None

    def hold(self, reservation: Reservation) -> None:
        if not reservation.held:  # nothing held: no limit applies
            return
        self.holding[id(reservation)] = reservation
        if self.refresher is None:
            self.refresher = asyncio.get_running_loop().create_task(self._keep_holding())

    async def _keep_holding(self) -> None:
        """A hold expires HOLD_SECONDS after it was made, so that a dead process's come back;
        a live request can run longer (a long stream), so its holds are moved on meanwhile."""
        while True:
            await asyncio.sleep(budget_rules.HOLD_SECONDS / 3)
            if self.holding:
                try:
                    await self.budget.refresh(list(self.holding.values()))
                except Exception:  # tried again on the next round, well before they expire
                    logger.exception("could not refresh the holds of running requests")

    async def close(self) -> None:
        if self.settling:
            await asyncio.gather(*list(self.settling), return_exceptions=True)
        if self.refresher is not None:
            self.refresher.cancel()
            self.refresher = None
        if self.spans is not None:  # what is still queued goes out first
            await asyncio.to_thread(self.spans.close)


@dataclass(slots=True)
class Call:
    gateway: Gateway
    principal: Principal
    request_id: str
    endpoint: str
    route: Route
    provider: Provider
    price: Price
    reservation: Reservation | None = None
    started: float = field(default_factory=time.perf_counter)
    finished: bool = False
    tool_calls: int = 0  # tool calls in the answer, for the request log
    cost_micros: int = 0  # what it was billed, once settled
    usage: Usage | None = None  # what it was billed for, once settled
    # The attempts across accounts and providers (None for test keys and a bare Gateway).
    trace: Trace | None = None
    # Holds of models this call failed over from, released when it settles.
    earlier_reservations: list[Reservation] = field(default_factory=list)
    # What the reservation was computed from (the budget view of the body), for a failover's.
    budget_body: dict[str, Any] | None = None
    # What the request's fields add to its worst case, and the edits they call for upstream.
    exposure: Exposure | None = None
    # What the gateway dropped or changed, for X-Tollgate-Warning (`warn`).
    warnings: list[str] = field(default_factory=list)
    # The worst case that was reserved, where an endpoint priced it itself (SPEC §5.12).
    worst: Usage | None = None
    # The request's steps and trace id (`api/gateway/traces.py`).
    timing: Timing | None = None
    # A response cache hit (`api/gateway/cache.py`): its kind, and what the stored answer used
    # upstream (the tokens and cost the hit saved).
    cache: str | None = None
    saved: Usage | None = None

    @property
    def model(self) -> str:
        return self.route.entry.id

    @property
    def response_headers(self) -> dict[str, str]:
        """Headers a successful answer carries: rate-limit windows, a clamped `max_tokens`."""
        reservation = self.reservation
        trace = self.trace
        extra = trace.headers(self.provider.name, self.model) if trace is not None else None
        if self.warnings:
            extra = {**(extra or {}), **warning_header(self.warnings)}
        if reservation is None:
            return extra or {}
        headers = dict(reservation.rate_headers)
        if reservation.clamped:
            headers[CLAMP_HEADER] = str(reservation.max_output_tokens)
        if extra:
            headers.update(extra)
        return headers

    def step(
        self, name: str, started: int | None = None, attrs: dict[str, Any] | None = None
    ) -> int:
        """Record a step of this request (`traces.Timing.step`): `started` is a
        `time.perf_counter_ns()`, else where the previous step ended; returns now."""
        timing = self.timing
        return timing.step(name, started, attrs) if timing is not None else 0

    def warn(self, said: list[str]) -> None:
        """Name what the gateway dropped or changed in the answer's X-Tollgate-Warning (once:
        an answer run again after a failover says it again)."""
        self.warnings += [item for item in said if item not in self.warnings]

    @asynccontextmanager
    async def failures_recorded(self) -> AsyncIterator[None]:
        """Whatever fails inside is metered as a failed request (once) before it propagates."""
        try:
            yield
        except asyncio.CancelledError:  # shutdown, waiting to retry, a server that cancels
            self.finish_soon(Usage(), status=499)
            raise
        except AppError as error:
            trace = self.trace
            if trace is not None and trace.fails_over is not None and trace.fails_over(error):
                raise  # `failover.serve` answers it from another provider, or finishes it
            await self.finish(Usage(), status=error.status_code, error=error)
            raise
        except Exception:
            await self.finish(Usage(), status=500, error=InternalError())
            raise

    async def finish(
        self, usage: Usage, *, status: int = 200, error: AppError | None = None
    ) -> int:
        """Meter the call, settle its reservation and make its usage event durable, once;
        returns its cost in micro-USD. A cancelled caller does not cancel the settlement."""
        task = self.finish_soon(usage, status=status, error=error)
        return await asyncio.shield(task) if task is not None else 0

    def finish_soon(
        self, usage: Usage, *, status: int = 200, error: AppError | None = None
    ) -> asyncio.Task[int] | None:
        """`finish` without waiting, for a client that is gone (nothing left to acknowledge)."""
        if self.finished:
            return None
        self.finished = True
        task = asyncio.get_running_loop().create_task(self._settle(usage, status, error))
        settling = self.gateway.settling
        settling.add(task)
        task.add_done_callback(settling.discard)
        return task

    def abandon(self, stream: UpstreamStream, reader: UsageReader, so_far: Usage) -> None:
        """The client left mid-stream. What the upstream produced, hidden reasoning included,
        is known only from its final usage: read on for it (bounded by DRAIN_SECONDS and
        DRAIN_BYTES) in the background, then settle; failing that, bill the worst case that
        was reserved. `so_far` is what the relay counted, the least it is billed."""
        if self.finished:
            stream.close()
            return
        self.finished = True
        task = asyncio.get_running_loop().create_task(self._drain(stream, reader, so_far))
        settling = self.gateway.settling
        settling.add(task)
        task.add_done_callback(settling.discard)

    async def _drain(self, stream: UpstreamStream, reader: UsageReader, so_far: Usage) -> int:
        usage: Usage | None = None
        received = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                async for event in stream.rest():
                    received += len(event.data)
                    if received > DRAIN_BYTES or (usage := reader.feed(event)) is not None:
                        break
                else:
                    usage = reader.end()
        except Exception:  # a timeout, a broken or failed stream: nothing more to learn
            logger.info("a stream its client left ended without usage: billed its worst case")
        if usage is None:
            stream.close()
            usage = self.worst_usage()
        else:
            stream.release()
            if not (usage.input_tokens and usage.output_tokens):  # a partial report
                usage = replace(
                    usage,
                    input_tokens=max(usage.input_tokens, so_far.input_tokens),
                    output_tokens=max(usage.output_tokens, so_far.output_tokens),
                    estimated=True,
                )
        return await self._settle(usage, 499, None)

    def worst_usage(self) -> Usage:
        """The usage of the worst case that was reserved for this call."""
        if self.worst is not None:
            return self.worst
        demand = demand_for(self.budget_body or {}, self.route.entry, self.price, self.exposure)
        held = self.reservation.max_output_tokens if self.reservation is not None else 0
        exposure = self.exposure or Exposure()
        writes = demand.input_tokens if exposure.cache_write else 0
        return Usage(
            input_tokens=demand.input_tokens,
            output_tokens=(held or demand.max_output_tokens) * demand.choices,
            estimated=True,
            cache_write_input_tokens=writes,
            cache_write_1h_input_tokens=writes if exposure.cache_write == "1h" else 0,
            web_search_requests=exposure.server_uses,
        )

    async def _settle(self, usage: Usage, status: int, error: AppError | None) -> int:
        settling_from = time.perf_counter_ns()
        gateway = self.gateway
        gateway.metrics.in_flight.dec()
        cost = self.cost_micros = cost_micros(usage, self.price)
        self.usage = usage
        latency_ms = int((time.perf_counter() - self.started) * 1000)
        key = self.principal.key
        trace = self.trace
        event = UsageRecord(
            request_id=self.request_id,
            tenant_id=key.tenant_id,
            key_id=key.id,
            endpoint=self.endpoint,
            model=self.model,
            provider=self.provider.name,
            status=status,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            audio_seconds=usage.audio_seconds,
            characters=usage.characters,
            images=usage.images,
            cost_micros=cost,
            latency_ms=latency_ms,
            tool_calls=self.tool_calls,
            estimated=usage.estimated,
            error_code=error.public_code if error else None,
        )
        if self.cache is not None and self.saved is not None:
            event.cache, event.cache_hits = self.cache, 1
            event.saved_tokens = self.saved.total_tokens
            event.saved_micros = cost_micros(self.saved, self.price)
        if trace is not None:
            event.attempts = len(trace.attempts) or 1
            event.account = trace.account
            event.failover_from = trace.failover_from
            event.trace = trace.summary()
            if tokens := usage.input_tokens + usage.output_tokens:
                provider = self.provider
                if isinstance(provider, PooledProvider) and provider.account is not None:
                    provider.account.add_tokens(tokens)
        metrics = gateway.metrics
        metrics.request_done(
            self.endpoint, self.provider.name, self.model, status,
            seconds=latency_ms / 1000, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cost_micro_usd=cost,
        )  # fmt: skip
        if error is not None and status >= 500:
            metrics.upstream_errors.labels(self.provider.name, error.public_code).inc()
        if trace is not None and len(trace.attempts) > 1:
            for attempt in trace.attempts[:-1]:
                metrics.upstream_retries.labels(attempt.provider, attempt.reason or "").inc()
            if trace.failover_from is not None:
                origin = trace.failover_from.partition("/")[0]
                metrics.failovers.labels(origin, self.provider.name).inc()
        if self.reservation is None:
            ledger_ns = self._traced(event, settling_from)
            await gateway.ledger.commit(event, [])
            self._export(event, ledger_ns)
            return cost
        for held in (self.reservation, *self.earlier_reservations):
            gateway.holding.pop(id(held), None)
        settling = gateway.budget.settlement(self.reservation, usage, cost, status < 400)
        for earlier in self.earlier_reservations:  # failed over from: released to nothing
            released = gateway.budget.settlement(earlier, Usage(), 0, False)
            settling.held += released.held
            settling.settlements += released.settlements
            settling.leased += released.leased
        ledger_ns = self._traced(event, settling_from)
        after = await gateway.ledger.commit(event, settling.settlements)
        gateway.budget.settled(settling, after)
        self._export(event, ledger_ns)
        return cost

    def _traced(self, event: UsageRecord, settling_from: int) -> int:
        """The event carries the request's trace (serialised once, here); returns when the
        event goes to the ledger."""
        timing = self.timing
        if timing is None:
            return 0
        ledger_ns = timing.step("settle", settling_from)
        timing.mark("ledger")
        attempts = self.trace.attempts if self.trace is not None else None
        event.trace_id = timing.trace_id
        event.steps = traces.serialise(timing, attempts)
        event.trace_attempts = traces.attempts_json(attempts)
        return ledger_ns

    def _export(self, event: UsageRecord, ledger_ns: int) -> None:
        spans = self.gateway.spans
        if spans is not None and self.timing is not None:
            spans.export(self, event, ledger_ns)


def access_allowed(principal: Principal, provider: str, model: str) -> bool:
    key = principal.key
    return (key.allowed_providers is None or provider in key.allowed_providers) and (
        key.allowed_models is None or model in key.allowed_models
    )


def check_access(principal: Principal, route: Route) -> None:
    key = principal.key
    if key.allowed_providers is not None and route.provider not in key.allowed_providers:
        raise ProviderNotAllowed(
            f"This key may not use the {route.provider} provider.", param="model"
        )
    if key.allowed_models is not None and route.entry.id not in key.allowed_models:
        raise ModelNotAllowed(f"This key may not use the model {route.entry.id}.", param="model")


def output_budget(body: dict[str, Any], entry_max: int) -> int:
    """The client's output cap (`max_completion_tokens`, else `max_tokens`), else the model's;
    never more than the model can produce (a client sized for another model asks for more)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, entry_max)
    return entry_max


def demand_for(
    body: dict[str, Any], entry: ModelEntry, price: Price, exposure: Exposure | None
) -> Demand:
    """The worst case of `body` (its budget view) on `entry`: the prompt's bound, the output
    cap, and what its fields add (see `api/gateway/exposure.py`)."""
    prompt = usage_rules.prompt_bound(body)
    output = output_budget(body, entry.max_output_tokens)
    if exposure is None:
        return Demand(prompt, output, price)
    prompt += exposure.extra_input_tokens
    if exposure.whole_context:  # server tools or documents: the input can fill the window
        prompt = max(prompt, entry.context_window)
    tier = price.for_prompt(prompt)
    writes = {"": None, "5m": tier.cache_write_input, "1h": tier.cache_write_1h_input}
    return Demand(
        prompt, output, price, choices=exposure.choices,
        input_price=writes[exposure.cache_write],
        fee_micros=exposure.server_uses * price.web_search,
    )  # fmt: skip


async def start_call(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: str,
    model: str,
    body: dict[str, Any],
    *,
    dialects: Collection[str] = ("openai",),
    session: str | None = None,
    exposure: Exposure | None = None,
    kind: str = "chat",
    worst: Callable[[ModelEntry, Price], Usage] | None = None,
    capability: str | None = None,
    timing: Timing | None = None,
) -> Call:
    """Everything before the provider call; raises before anything is sent upstream.

    `body` is read for the budget (`messages`, `tools`, the output cap), `exposure` for what
    the client's other fields add to it; `dialects` are the
    provider wire formats the calling endpoint can speak (`ProviderRegistry.get`); `session`
    keeps a conversation on one upstream account (`resilience.session_key`).
    The endpoints of SPEC §5.12 serve models of another `kind`, know their worst case as a
    usage (`worst`, reserved exactly) and need accounts with a `capability`.
    A refusal here (unknown model, access, budget) is still logged, at no cost.
    `timing` has the request's steps so far (`traces.Timing`), else they start here.
    """
    timing = timing or Timing(request_id)
    try:
        route = gateway.catalog.resolve(model)
        if route.entry.kind != kind:
            raise InvalidModel(
                f"The model {model!r} is a {route.entry.kind} model: {endpoint} serves "
                f"{kind} models.",
                param="model",
            )
    except AppError as error:
        record_refusal(
            gateway, principal, request_id, endpoint, model[:200], "", error, timing=timing
        )
        raise
    test = principal.key.test
    trace: Trace | None = None
    try:
        check_access(principal, route)
        timing.step("access")
        provider: Provider
        router = gateway.router
        if router is None or test:
            provider = gateway.providers.get(route.provider, test=test, dialects=dialects)
        else:
            tenant = await router.tenant(principal.key.tenant_id)
            if not router.configured(route.provider, tenant):
                gateway.providers.get(route.provider, test=False, dialects=dialects)  # raises
            if capability is not None and not router.serves(route.provider, tenant, capability):
                raise ProviderNotConfigured(
                    f"No {route.provider} account here serves {capability}: an account must "
                    f"declare the {capability!r} capability.",
                    param="model",
                )
            if session is not None:  # one tenant's session ids are not another's
                session = f"{principal.key.tenant_id.hex}:{session}"
            capability = capability or required_capability(body)
            trace = Trace(tenant, session, dialects, capability=capability)
            provider = PooledProvider(router, gateway.retry, route.provider, route.entry.id, trace)
        price = FREE if test else route.entry.price
        timing.step("route")

        worst_usage = worst(route.entry, price) if worst is not None else None

        def demand() -> Demand:
            if worst_usage is not None:
                return Demand.of_usage(worst_usage, price)
            return demand_for(body, route.entry, price, exposure)

        try:
            reservation = await gateway.budget.reserve(
                principal.key, principal.tenant_limits, demand
            )
        except (AppError, asyncio.CancelledError):
            raise
        except Exception as exc:  # caps that cannot be checked are not waved through
            logger.exception("reserving against the limits of key %s failed", principal.key.id)
            raise LimitsUnavailable() from exc
        timing.step("limits")
    except AppError as error:
        provider_name = "mock" if test else route.provider
        record_refusal(
            gateway, principal, request_id, endpoint, route.entry.id, provider_name, error,
            timing=timing,
        )  # fmt: skip
        raise
    gateway.metrics.in_flight.inc()
    gateway.hold(reservation)
    return Call(
        gateway=gateway,
        principal=principal,
        request_id=request_id,
        endpoint=endpoint,
        route=route,
        provider=provider,
        price=price,
        reservation=reservation,
        trace=trace,
        budget_body=body,
        exposure=exposure,
        warnings=list(exposure.warnings) if exposure is not None else [],
        worst=worst_usage,
        timing=timing,
    )


async def reroute(call: Call, entry: ModelEntry) -> None:
    """Fail `call` over to `entry` (a model of another provider): reserve its worst case, then
    switch. The earlier hold stays until the call settles (see `api/gateway/resilience.py`)."""
    gateway, trace, principal = call.gateway, call.trace, call.principal
    assert trace is not None
    assert gateway.router is not None
    earlier = call.reservation
    body = call.budget_body or {}
    previous = call.route

    def demand() -> Demand:
        return demand_for(body, entry, entry.price, call.exposure)

    reservation = await gateway.budget.reserve(principal.key, principal.tenant_limits, demand)
    gateway.hold(reservation)
    if earlier is not None:
        call.earlier_reservations.append(earlier)
    if trace.failover_from is None:
        trace.failover_from = f"{previous.provider}/{previous.entry.id}"
    call.route = Route(entry=entry, provider=entry.provider, upstream_model=entry.id)
    call.price = entry.price
    call.reservation = reservation
    call.provider = PooledProvider(gateway.router, gateway.retry, entry.provider, entry.id, trace)


def record_refusal(
    gateway: Gateway,
    principal: Principal,
    request_id: str,
    endpoint: str,
    model: str,
    provider: str,
    error: AppError,
    *,
    timing: Timing | None = None,
) -> None:
    key = principal.key
    event = UsageRecord(
        request_id=request_id, tenant_id=key.tenant_id, key_id=key.id, endpoint=endpoint,
        model=model, provider=provider, status=error.status_code, error_code=error.public_code,
    )  # fmt: skip
    if timing is not None:  # the steps it took before it was refused
        timing.step("refused", attrs={"code": error.public_code})
        event.trace_id, event.steps = timing.trace_id, traces.serialise(timing, None)
    gateway.ledger.record(event)
    # A name the client made up must not become a metric series: that would grow without bound.
    label = model if model in gateway.catalog.entries else "unknown"
    gateway.metrics.request_done(endpoint, provider, label, error.status_code, seconds=None)


def upstream_body(
    body: dict[str, Any],
    call: Call,
    *,
    stream: bool,
    caps: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
) -> dict[str, Any]:
    """Same dialect in and out: forward the client's JSON with only the listed edits: the
    model name, forced usage reporting (Chat Completions streams), an output cap (the
    dialect's `caps` fields, the last one when the client gave none) no larger than what was
    reserved (the remaining budget, or the model's maximum), and what the cost policy of its
    fields calls for (`exposure.apply`: unknown fields dropped, server tools bounded)."""
    out = dict(body) if call.exposure is None else dict(exposure_rules.apply(call.exposure, body))
    out["model"] = call.route.upstream_model
    reservation = call.reservation
    if reservation is not None and reservation.max_output_tokens > 0:
        held = reservation.max_output_tokens
        given = [name for name in caps if name in body]
        for name in given:
            if not isinstance(body[name], int) or body[name] > held:
                out[name] = held
        if reservation.clamped and not given:
            out[caps[-1]] = held
    if stream:
        options = out.get("stream_options")
        out["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return out
