"""Pure ASGI middleware: request ids, the body-size limit (no BaseHTTPMiddleware), and the
proxy lane that serves the hottest routes without FastAPI's routing and dependency layers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_handlers import render_error, render_exception
from api.errors import RequestTooLarge

_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Echo a sane client `x-request-id`, else mint one; both SDKs read it from every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id")
        request_id = given if given and _SANE_REQUEST_ID.match(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["request-id"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413, by Content-Length up front or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = RequestTooLarge(f"The request body exceeds {self.max_bytes} bytes.")
            response = render_error(scope["path"], error)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPException from body reading; the handler renders it.
                    raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


Handler = Callable[[Request], Awaitable[Response]]


class ProxyLane:
    """Serves `POST <path>` for the proxy's routes straight from their handler functions.

    It sits inside the request-id and body-size middleware and in front of FastAPI's own
    stack: exception middleware, exit stacks, routing and the request/response wrappers
    measured more CPU per proxied request than auth, caps and metering together. The routes stay
    registered with FastAPI too (OpenAPI, other methods); errors render exactly as there.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[str, Handler]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.routes.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except Exception as exc:
            response = render_exception(scope["path"], exc, scope["state"].get("request_id"))
        await response(scope, receive, send)
