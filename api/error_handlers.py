"""Render every error in the family shape of the route it happened on (SPEC §6).

Errors are rendered by path rather than by route class, because some happen before any route
matches (unknown path, oversized body, bad key) and still owe the client its family's shape.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    AppError,
    DatabaseUnavailable,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
    anthropic_body,
    error_headers,
    google_body,
    openai_body,
)

logger = logging.getLogger("tollgate.errors")

_ANTHROPIC_PATHS = ("/v1/messages",)


def google_path(path: str) -> bool:
    """Google's model API: everything under `/v1beta/`, and `/v1/models/{model}:{method}`."""
    return path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path)


def render_error(path: str, error: AppError) -> JSONResponse:
    if path.startswith(_ANTHROPIC_PATHS):
        body = anthropic_body(error)
    elif google_path(path):
        body = google_body(error)
    else:
        body = openai_body(error)
    return JSONResponse(body, status_code=error.status_code, headers=error_headers(error))


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    errors = exc.errors()
    if not errors:
        return InvalidRequest()
    first = errors[0]
    kind, loc = first.get("type"), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "malformed JSON")
        return InvalidRequest(f"The request body is not valid JSON: {detail}.")
    param = _param(loc)
    if kind == "missing" and loc == ("body",):
        return InvalidRequest("A JSON request body is required.")
    if kind == "extra_forbidden":
        return InvalidRequest(f"Unknown field: {param}.", param=param)
    if kind == "missing":
        return InvalidRequest(f"Missing required field: {param}.", param=param)
    message = str(first.get("msg", "Invalid value")).removeprefix("Value error, ")
    return InvalidRequest(f"{param}: {message}." if param else f"{message}.", param=param)


def from_http_exception(exc: StarletteHTTPException) -> AppError:
    if exc.status_code == 404:
        return NotFound("No such route.")
    if exc.status_code == 405:
        return MethodNotAllowed(headers=dict(exc.headers or {}))  # `Allow`: what the path takes
    if exc.status_code == 413:
        return RequestTooLarge()
    if exc.status_code < 500:
        return InvalidRequest(str(exc.detail))
    return InternalError()


def render_exception(path: str, exc: Exception, request_id: str | None) -> JSONResponse:
    """Any exception a route let through, as the client's family expects it."""
    if isinstance(exc, AppError):
        return render_error(path, exc)
    if isinstance(exc, StarletteHTTPException):
        return render_error(path, from_http_exception(exc))
    if isinstance(exc, OperationalError):  # the database is down, restarting or locked
        logger.error("the database failed on %s: %s", path, exc.orig)
        return render_error(path, DatabaseUnavailable())
    logger.error("unhandled error on %s", path, exc_info=exc)
    response = render_error(path, InternalError())
    if request_id:
        response.headers["x-request-id"] = response.headers["request-id"] = request_id
    return response


def _for(request: Request, error: AppError) -> Response:
    """The error in its family's JSON, or as a page under /dashboard (a browser's)."""
    path = request.url.path
    if path == "/dashboard" or path.startswith("/dashboard/"):
        from api.dashboard.render import error_page  # the dashboard imports this module

        return error_page(error)
    return render_error(path, error)


def _allowed(request: Request) -> str:
    """Every method the path takes, over all its routes (Starlette names only the first
    route's, so `PUT /v1/keys` would say `POST` where `GET` is allowed too)."""
    path, methods = request.url.path, set()
    for route in request.app.router.routes:
        # An included router (FastAPI 0.160 and later) holds its routes as contexts.
        contexts = getattr(route, "effective_route_contexts", None)
        for item in contexts() if contexts is not None else [route]:
            regex = getattr(item, "path_regex", None)
            if regex is not None and regex.match(path) and getattr(item, "methods", None):
                methods |= set(item.methods)
    return ", ".join(sorted(methods))


def install(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return _for(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _for(request, validation_error(exc))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = from_http_exception(exc)
        if exc.status_code == 405:
            error.headers["Allow"] = _allowed(request) or error.headers.get("allow", "")
        return _for(request, error)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # ServerErrorMiddleware sits outside the request-id middleware: set the id here.
        request_id = getattr(request.state, "request_id", None)
        response = render_exception(request.url.path, exc, request_id)
        if request.url.path.startswith("/dashboard/"):  # logged by render_exception
            if isinstance(exc, OperationalError):
                return _for(request, DatabaseUnavailable())
            return _for(request, InternalError())
        return response

    async def on_database_error(request: Request, exc: Exception) -> Response:
        # Handled here, not by the catch-all: that one re-raises after answering, and uvicorn
        # then closes the client's keep-alive connection.
        assert isinstance(exc, OperationalError)
        logger.error("the database failed on %s: %s", request.url.path, exc.orig)
        return _for(request, DatabaseUnavailable())

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(OperationalError, on_database_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
