"""How a stored trace reads (`GET /v1/traces/{id}`)."""

from __future__ import annotations

from typing import Any

import orjson

from api.kit.time import isoformat
from api.trace.models import RequestTrace
from api.usage.models import UsageEvent


def render(trace: RequestTrace, event: UsageEvent | None) -> dict[str, Any]:
    """The trace with its request-log entry's model, provider and status (None once the log
    no longer keeps it). `duration_ms`: from the request's arrival to its event's hand-over
    to the ledger."""
    steps: list[dict[str, Any]] = orjson.loads(trace.steps)
    duration = max((s["start_ms"] + (s["duration_ms"] or 0) for s in steps), default=0.0)
    return {
        "object": "trace",
        "id": trace.trace_id,
        "request_id": trace.request_id,
        "key_id": str(trace.key_id),
        "model": event.model if event is not None else None,
        "provider": event.provider if event is not None else None,
        "status": event.status if event is not None else None,
        "created_at": isoformat(trace.created_at),
        "duration_ms": round(duration, 3),
        "steps": steps,
        "attempts": orjson.loads(trace.attempts) if trace.attempts else [],
    }
