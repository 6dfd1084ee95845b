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
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from api.auth.service import Principal
from api.errors import (
    AppError,
    InternalError,
    LimitsUnavailable,
    ModelNotAllowed,
    ProviderNotAllowed,
)
from api.gateway import usage as usage_rules
from api.gateway.budget import BudgetGuard, Demand, Reservation
from api.gateway.catalog import Catalog, ModelEntry, Route
from api.gateway.pricing import FREE, Price, Usage, cost_micros
from api.gateway.providers.base import Provider
from api.gateway.providers.registry import ProviderRegistry
from api.gateway.resilience import (
    PooledProvider,
    RetryPolicy,
    Trace,
    required_capability,
    will_fail_over,
)
from api.gateway.routing import Router
from api.metrics import Metrics
from api.usage.ledger import Ledger, UsageRecord

logger = logging.getLogger("tollgate.gateway")

# Tells the client its `max_tokens` was lowered to what the key's remaining budget affords.
CLAMP_HEADER = "x-tollgate-max-tokens-clamped"


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
    # Settlements of requests whose client went away; awaited at shutdown.
    settling: set[asyncio.Task[int]] = field(default_factory=set)

    async def close(self) -> None:
        if self.settling:
            await asyncio.gather(*list(self.settling), return_exceptions=True)


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
    # The attempts across accounts and providers (None for test keys and a bare Gateway).
    trace: Trace | None = None
    # Holds of models this call failed over from, released when it settles.
    earlier_reservations: list[Reservation] = field(default_factory=list)
    # What the reservation was computed from (the budget view of the body), for a failover's.
    budget_body: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return self.route.entry.id

    @property
    def response_headers(self) -> dict[str, str]:
        """Headers a successful answer carries: rate-limit windows, a clamped `max_tokens`."""
        reservation = self.reservation
        trace = self.trace
        extra = trace.headers(self.provider.name, self.model) if trace is not None else None
        if reservation is None:
            return extra or {}
        headers = dict(reservation.rate_headers)
        if reservation.clamped:
            headers[CLAMP_HEADER] = str(reservation.max_output_tokens)
        if extra:
            headers.update(extra)
        return headers

    @asynccontextmanager
    async def failures_recorded(self) -> AsyncIterator[None]:
        """Whatever fails inside is metered as a failed request (once) before it propagates."""
        try:
            yield
        except asyncio.CancelledError:  # shutdown, waiting to retry, a server that cancels
            self.finish_soon(Usage(), status=499)
            raise
        except AppError as error:
            if self.trace is not None and will_fail_over(self, error):
                raise  # `resilience.serve` answers it from another provider, or finishes it
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

    async def _settle(self, usage: Usage, status: int, error: AppError | None) -> int:
        gateway = self.gateway
        gateway.metrics.in_flight.dec()
        cost = cost_micros(usage, self.price)
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
            cost_micros=cost,
            latency_ms=latency_ms,
            tool_calls=self.tool_calls,
            estimated=usage.estimated,
            error_code=error.public_code if error else None,
        )
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
            await gateway.ledger.commit(event, [])
            return cost
        settling = gateway.budget.settlement(self.reservation, usage, cost, status < 400)
        for earlier in self.earlier_reservations:  # failed over from: released to nothing
            released = gateway.budget.settlement(earlier, Usage(), 0, False)
            settling.held += released.held
            settling.settlements += released.settlements
            settling.leased += released.leased
        after = await gateway.ledger.commit(event, settling.settlements)
        gateway.budget.settled(settling, after)
        return cost


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
) -> Call:
    """Everything before the provider call; raises before anything is sent upstream.

    `body` is read for the budget (`messages`, `tools`, the output cap); `dialects` are the
    provider wire formats the calling endpoint can speak (`ProviderRegistry.get`); `session`
    keeps a conversation on one upstream account (`resilience.session_key`).
    A refusal here (unknown model, access, budget) is still logged, at no cost.
    """
    try:
        route = gateway.catalog.resolve(model)
    except AppError as error:
        record_refusal(gateway, principal, request_id, endpoint, model[:200], "", error)
        raise
    test = principal.key.test
    trace: Trace | None = None
    try:
        check_access(principal, route)
        provider: Provider
        router = gateway.router
        if router is None or test:
            provider = gateway.providers.get(route.provider, test=test, dialects=dialects)
        else:
            tenant = await router.tenant(principal.key.tenant_id)
            if not router.configured(route.provider, tenant):
                gateway.providers.get(route.provider, test=False, dialects=dialects)  # raises
            if session is not None:  # one tenant's session ids are not another's
                session = f"{principal.key.tenant_id.hex}:{session}"
            trace = Trace(tenant, session, dialects, capability=required_capability(body))
            provider = PooledProvider(router, gateway.retry, route.provider, route.entry.id, trace)
        price = FREE if test else route.entry.price

        def demand() -> Demand:
            return Demand(
                input_tokens=usage_rules.prompt_bound(body),
                max_output_tokens=output_budget(body, route.entry.max_output_tokens),
                price=price,
            )

        try:
            reservation = await gateway.budget.reserve(
                principal.key, principal.tenant_limits, demand
            )
        except (AppError, asyncio.CancelledError):
            raise
        except Exception as exc:  # caps that cannot be checked are not waved through
            logger.exception("reserving against the limits of key %s failed", principal.key.id)
            raise LimitsUnavailable() from exc
    except AppError as error:
        provider_name = "mock" if test else route.provider
        record_refusal(
            gateway, principal, request_id, endpoint, route.entry.id, provider_name, error
        )
        raise
    gateway.metrics.in_flight.inc()
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
        budget_body=body if trace is not None else None,
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
        return Demand(
            input_tokens=usage_rules.prompt_bound(body),
            max_output_tokens=output_budget(body, entry.max_output_tokens),
            price=entry.price,
        )

    reservation = await gateway.budget.reserve(principal.key, principal.tenant_limits, demand)
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
) -> None:
    key = principal.key
    gateway.ledger.record(
        UsageRecord(
            request_id=request_id, tenant_id=key.tenant_id, key_id=key.id, endpoint=endpoint,
            model=model, provider=provider, status=error.status_code, error_code=error.public_code,
        )
    )  # fmt: skip
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
    model name, forced usage reporting (Chat Completions streams), and an output cap (the
    dialect's `caps` fields, the last one when the client gave none) no larger than what was
    reserved (the remaining budget, or the model's maximum)."""
    out = dict(body)
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
