"""Cross-provider failover: a step the pipeline's callers take around a route's answer.

When every account of the provider failed, `serve` fails the request over to an equivalent
model (same catalog tier) on another provider, if the tenant enabled it
(`PUT /v1/settings {"failover": {"enabled": true}}`). The route's own answer function runs again
with the new model: translation makes the switch invisible to the client. The cap still holds:
the new model is reserved for its own worst case before the switch, and the original hold is
kept until the request settles (both are settled together, the first to zero), so a failover
never spends beyond what the limits allow; if the new reservation does not fit, there is no
failover and the original error stands.

It depends on the pipeline (`Call`, `reroute`) and never the other way round: the pipeline
learns that a failure will be answered elsewhere through `Trace.fails_over`, set here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from api.errors import AppError
from api.gateway.catalog import Catalog, ModelEntry
from api.gateway.pipeline import Call, access_allowed, reroute
from api.gateway.pricing import Usage
from api.gateway.resilience import DIALECT_OF, Trace, failover_worthy
from api.gateway.routing import Router

logger = logging.getLogger("tollgate.gateway")
T = TypeVar("T")


def alternates(catalog: Catalog, router: Router, call: Call, trace: Trace) -> list[ModelEntry]:
    """Equivalent models (same tier) on other providers this key may use, best first:
    cheapest for the `cost` and `default` strategies, fastest recent p50 for `latency`."""
    entry = call.route.entry
    seen_providers = {entry.provider}
    found: list[ModelEntry] = []
    for candidate in catalog.entries.values():
        if candidate.tier != entry.tier or candidate.provider in seen_providers:
            continue
        if candidate.kind != entry.kind:  # an embedding model never answers a chat
            continue
        if DIALECT_OF.get(candidate.provider) not in trace.dialects:
            continue
        if not router.configured(candidate.provider, trace.tenant):
            continue
        if not access_allowed(call.principal, candidate.provider, candidate.id):
            continue
        found.append(candidate)
    if trace.tenant.strategy == "latency":

        def p50(model: ModelEntry) -> float:
            accounts = router.accounts(model.provider, trace.tenant)
            return min((a.health.p50 for a in accounts), default=0.0)

        found.sort(key=p50)
    else:
        found.sort(key=lambda m: m.price.input + m.price.output)
    out: list[ModelEntry] = []
    for candidate in found:  # one model per provider: the best of each
        if candidate.provider not in {m.provider for m in out}:
            out.append(candidate)
    return out


def will_fail_over(call: Call, error: AppError) -> bool:
    """Whether `serve` will answer this failure from another provider (so the call is not
    finished with it)."""
    trace = call.trace
    if trace is None or not trace.tenant.failover or not failover_worthy(error):
        return False
    if trace.alternates is None:
        gateway = call.gateway
        if gateway.router is None:
            return False
        trace.alternates = alternates(gateway.catalog, gateway.router, call, trace)
    return any(m.id not in trace.tried_models for m in trace.alternates)


async def serve(call: Call, answer: Callable[[], Awaitable[T]]) -> T:
    """Run the route's `answer`; on a failure `will_fail_over` accepted, switch the call to
    the next equivalent model and run it again."""
    if call.trace is not None:
        call.trace.fails_over = lambda error: will_fail_over(call, error)
    while True:
        try:
            return await answer()
        except AppError as error:
            if call.finished or not will_fail_over(call, error):
                raise
            try:
                switched = await _switch(call, error)
            except BaseException:
                call.finish_soon(Usage(), status=499)
                raise
            if not switched:
                await call.finish(Usage(), status=error.status_code, error=error)
                raise


async def _switch(call: Call, error: AppError) -> bool:
    """Point the call at the next alternate model; False when none could be reserved."""
    trace = call.trace
    assert trace is not None
    assert trace.alternates is not None
    trace.tried_models.add(call.route.entry.id)
    for candidate in trace.alternates:
        if candidate.id in trace.tried_models:
            continue
        trace.tried_models.add(candidate.id)
        try:
            await reroute(call, candidate)
        except AppError as refused:
            logger.info("no failover to %s: %s", candidate.id, refused.public_code)
            continue
        except Exception:  # the limits cannot be checked: no failover, the call still ends
            logger.exception("reserving for a failover to %s failed", candidate.id)
            return False
        logger.info(
            "failing over from %s to %s/%s after %s",
            trace.failover_from, candidate.provider, candidate.id, error.public_code,
        )  # fmt: skip
        return True
    return False
