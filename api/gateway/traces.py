"""Request traces: where each proxied request's time went (docs/decisions/0008-request-traces.md).

A request's steps are timed with `time.perf_counter_ns` into one list of tuples on its `Timing`
(`(name, start_ns, end_ns, attrs)`), in the order they ran: auth, body, access, route, limits
(rate limits and the cap reservation are one atomic call), cache, translate, each upstream
attempt (from `resilience.Trace.attempts`, not recorded twice), first byte (streams), settle,
ledger. `serialise` turns them into JSON once, at settle, and the usage event carries it to the
`request_traces` table through the ledger's one durable path, so a trace is written exactly
once, with its event. The ledger step is where the event was handed over: its duration is only
known once the event is durable, after the trace was written (the OpenTelemetry span has it).

`trace_id`: a client's `x-trace-id` (printable, at most 128 characters), else the request id;
echoed as `X-Trace-Id` on every answer. Trace ids are per tenant.
"""

from __future__ import annotations

import re
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from api.gateway.resilience import Attempt

HEADER = "x-trace-id"
RAW_HEADER = b"x-trace-id"
# Printable ASCII, no leading space (an HTTP parser strips it anyway), at most 128 characters.
_SANE = re.compile(rb"[\x21-\x7e][\x20-\x7e]{0,127}")

# (name, start_ns, end_ns, attrs): ends equal to starts are marks (the first byte).
Step = tuple[str, int, int, dict[str, Any] | None]


def sane_trace_id(raw: bytes | None) -> str | None:
    """The client's trace id when it is printable and at most 128 characters, else None."""
    if raw and _SANE.fullmatch(raw):
        return raw.decode("ascii").rstrip()
    return None


class Timing:
    """One request's steps. `origin` is when the request reached Tollgate (perf_counter_ns)."""

    __slots__ = ("last", "origin", "steps", "trace_id")

    def __init__(self, trace_id: str, origin: int | None = None) -> None:
        self.trace_id = trace_id
        self.origin = self.last = perf_counter_ns() if origin is None else origin
        self.steps: list[Step] = []

    def step(
        self, name: str, started: int | None = None, attrs: dict[str, Any] | None = None
    ) -> int:
        """Record `name` from `started` (default: where the previous step ended) to now;
        returns now (the next step's start)."""
        now = perf_counter_ns()
        self.steps.append((name, self.last if started is None else started, now, attrs))
        self.last = now
        return now

    def mark(self, name: str, attrs: dict[str, Any] | None = None) -> None:
        """A point in time (no duration), such as the first byte of a stream."""
        now = perf_counter_ns()
        self.steps.append((name, now, now, attrs))


def _ms(ns: int) -> float:
    return round(ns / 1_000_000, 3)


def step_dicts(timing: Timing, attempts: list[Attempt] | None) -> list[dict[str, Any]]:
    """The steps as `GET /v1/traces/{id}` shows them, attempts in their place by start time."""
    origin = timing.origin
    out: list[tuple[int, dict[str, Any]]] = []
    for name, start, end, attrs in timing.steps:
        item: dict[str, Any] = {"name": name, "start_ms": _ms(start - origin)}
        item["duration_ms"] = None if name == "ledger" else _ms(end - start)
        if attrs:
            item.update(attrs)
        out.append((start, item))
    for attempt in attempts or ():
        began = int(attempt.began * 1_000_000_000)
        item = {
            "name": "attempt", "start_ms": _ms(began - origin), "duration_ms": attempt.ms,
            "provider": attempt.provider, "model": attempt.model, "account": attempt.account,
            "status": attempt.status, "reason": attempt.reason,
        }  # fmt: skip
        out.append((began, item))
    out.sort(key=lambda pair: pair[0])
    return [item for _, item in out]


def serialise(timing: Timing, attempts: list[Attempt] | None) -> str:
    """The steps as stored (JSON), once per request, at settle."""
    return orjson.dumps(step_dicts(timing, attempts)).decode()


def attempts_json(attempts: list[Attempt] | None) -> str | None:
    if not attempts:
        return None
    return orjson.dumps([a.as_json() for a in attempts[-20:]]).decode()


def of_request(state: Any) -> Timing:
    """A request's `Timing`, from when it reached Tollgate (`request.state`, set by the
    request-id middleware or the proxy lane)."""
    request_id: str = state.request_id
    return Timing(
        getattr(state, "trace_id", None) or request_id, getattr(state, "started_ns", None)
    )
