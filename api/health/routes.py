"""Liveness and readiness (SPEC §5.11)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.deps import AdminAccess, RedisDep
from api.search.store import StoreUnavailable, VectorStore

router = APIRouter(tags=["health"])
logger = logging.getLogger("tollgate.health")
VECTORS_PING_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, redis: RedisDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with request.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        logger.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
    if redis is None:
        checks["redis"] = "not configured"
    else:
        try:
            await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            logger.warning("readiness: redis unreachable: %s", exc)
            checks["redis"] = "unreachable"
    ready = all(value in ("ok", "not configured") for value in checks.values())
    # Reported, not required: with the vector store down only search answers 503
    # (search_unavailable) while the proxy, metering and billing serve on: "degraded".
    checks["qdrant"] = await _vectors(request.state.search.store)
    status = "ready" if checks["qdrant"] != "unreachable" else "degraded"
    body = {"status": status if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _vectors(store: VectorStore | None) -> str:
    if store is None:
        return "not configured"
    try:
        async with asyncio.timeout(VECTORS_PING_SECONDS):
            await store.ping()
    except (StoreUnavailable, TimeoutError) as exc:
        logger.warning("readiness: qdrant unreachable: %r", exc)
        return "unreachable"
    return "ok"


_LLMS_TXT = (Path(__file__).parent / "llms.txt").read_text()


@router.get("/llms.txt", include_in_schema=False)
async def llms_txt() -> PlainTextResponse:
    """A summary of the API for coding agents (llmstxt.org)."""
    return PlainTextResponse(_LLMS_TXT, media_type="text/markdown; charset=utf-8")


# Behind the admin token: the series name models and providers and count spend, which is no
# one else's business; without a token the route is off, like the admin API.
@router.get("/metrics", include_in_schema=False, dependencies=[AdminAccess])
async def metrics(request: Request) -> Response:
    registry = request.state.gateway.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
