"""Annotated dependency aliases: routes read `session: DbSession, principal: MasterPrincipal`."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service as auth_service
from api.db import session_scope
from api.errors import (
    AuthenticationFailed,
    InsufficientScope,
    InvalidRequest,
    MissingApiKey,
    NotFound,
)
from api.gateway.pipeline import Gateway
from api.kit import nul
from api.kit.json_depth import check_depth, may_nest_too_deep
from api.settings import Settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with session_scope(request.state.sessionmaker) as session:
        yield session


async def _settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def _pepper(request: Request) -> bytes:
    pepper: bytes = request.state.pepper
    return pepper


async def _redis(request: Request) -> Redis | None:
    redis: Redis | None = request.state.redis
    return redis


# scope="function": commit before the response is sent, so a failed commit is never a 2xx.
DbSession = Annotated[AsyncSession, Depends(_session, scope="function")]
AppSettings = Annotated[Settings, Depends(_settings)]
Pepper = Annotated[bytes, Depends(_pepper)]
RedisDep = Annotated[Redis | None, Depends(_redis)]


def presented_secret(request: Request) -> str | None:
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or None


async def _principal(
    request: Request, session: DbSession, pepper: Pepper
) -> auth_service.Principal:
    secret = presented_secret(request)
    if secret is None:
        raise MissingApiKey()
    return await auth_service.authenticate(session, pepper, secret)


async def _master(
    principal: Annotated[auth_service.Principal, Depends(_principal)],
) -> auth_service.Principal:
    if not principal.is_master:
        raise InsufficientScope()
    return principal


async def gateway_principal(request: Request) -> auth_service.Principal:
    """The proxy's authentication: from the key cache, or a session just for the lookup, so no
    database connection is held while the upstream call runs (which can take minutes).

    The proxy routes call it directly rather than through `Depends`: on the hot path FastAPI's
    dependency resolution measured more CPU than the rest of the request.
    """
    secret = presented_secret(request)
    if secret is None:
        raise MissingApiKey()
    state = request.state
    return await auth_service.authenticate_cached(
        state.sessionmaker, state.key_cache, state.pepper, secret
    )


async def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.state.gateway
    return gateway


Principal = Annotated[auth_service.Principal, Depends(_principal)]
GatewayPrincipal = Annotated[auth_service.Principal, Depends(gateway_principal)]
GatewayDep = Annotated[Gateway, Depends(_gateway)]
MasterPrincipal = Annotated[auth_service.Principal, Depends(_master)]


async def _admin(request: Request, settings: AppSettings) -> None:
    token = settings.admin_token
    if token is None:
        raise NotFound("No such route.")  # the admin API is off without TOLLGATE_ADMIN_TOKEN
    presented = presented_secret(request)
    if presented is None:
        raise MissingApiKey("Send the admin token as 'Authorization: Bearer <token>'.")
    if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
        raise AuthenticationFailed("Invalid admin token.")


AdminAccess = Depends(_admin)


async def _bounded_json_body(request: Request) -> None:
    """What every body FastAPI parses must meet: the depth bound (`api.kit.json_depth`), and no
    NUL in its text, nor in the query or path (`api.kit.nul`). The proxy's routes parse their
    own bodies and check there."""
    if "%00" in request.url.query or "\0" in request.url.path:
        raise InvalidRequest("The URL may not contain the NUL character (%00).")
    raw = await request.body()
    deep = may_nest_too_deep(raw)
    if not deep and nul.ESCAPED not in raw:
        return
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:  # deeper than orjson reads, NaN…: what FastAPI read, if any
        try:
            parsed = await request.json()  # parsed and cached already for a route with a body
        except (ValueError, RecursionError):
            return  # not JSON: the route says so its own way
    if deep:
        check_depth(raw, parsed)
    nul.check_parsed(raw, parsed)


BoundedJSONBody = Depends(_bounded_json_body)
