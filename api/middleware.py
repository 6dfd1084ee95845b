"""Pure ASGI middleware: request ids, the body-size limit (no BaseHTTPMiddleware), and the
proxy lane that serves the hottest routes without FastAPI's routing and dependency layers."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter_ns
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.error_handlers import google_path, render_error, render_exception
from api.errors import RequestTooLarge
from api.gateway.traces import sane_trace_id

# Matched whole (`fullmatch`): with `match` and `$`, a trailing newline would pass and be
# echoed into the response headers.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def new_request_id() -> str:
    return f"req_{secrets.token_hex(16)}"


class RequestIdMiddleware:
    """Echo a sane client `x-request-id`, else mint one; both SDKs read it from every response.
    `X-Trace-Id`: the client's `x-trace-id` when sane (printable, ≤ 128), else the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter_ns()
        request_headers = Headers(scope=scope)
        given = request_headers.get("x-request-id")
        request_id = given if given and _SANE_REQUEST_ID.fullmatch(given) else new_request_id()
        traced = request_headers.get("x-trace-id")
        trace_id = sane_trace_id(traced.encode("latin-1") if traced else None) or request_id
        state = scope.setdefault("state", {})
        state["request_id"], state["trace_id"], state["started_ns"] = request_id, trace_id, started

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["request-id"] = request_id
                headers["x-trace-id"] = trace_id
            await send(message)

        await self.app(scope, receive, send_with_id)


_KEY_HEADERS = frozenset({b"authorization", b"x-api-key", b"x-goog-api-key"})


def google_query_key(scope: Scope) -> None:
    """A key sent as `?key=` (Google's clients may) taken out of the query string, in place,
    before the access log or anything else writes the URL down; on Google's model paths it
    becomes the `x-goog-api-key` header, unless a key header came too. Other routes take no
    key in the URL: there it is only removed. `TollgateApp` calls it first, for every request
    whose query string may hold one."""
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    keys = [value for name, value in pairs if name == "key"]
    if not keys:
        return
    scope["query_string"] = urlencode([(n, v) for n, v in pairs if n != "key"]).encode()
    headers = list(scope["headers"])
    if google_path(scope["path"]) and not any(name in _KEY_HEADERS for name, _ in headers):
        headers.append((b"x-goog-api-key", keys[0].encode("latin-1", "replace")))
        scope["headers"] = headers


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
        if declared is not None and _too_large(declared.encode(), self.max_bytes):
            response = _too_large_response(scope["path"], self.max_bytes)
            await response(scope, receive, send)
            return
        await self.app(scope, limited(receive, self.max_bytes), send)


def _too_large(declared: bytes, max_bytes: int) -> bool:
    return not declared.isdigit() or int(declared) > max_bytes


def _too_large_response(path: str, max_bytes: int) -> Response:
    return render_error(path, RequestTooLarge(f"The request body exceeds {max_bytes} bytes."))


def limited(receive: Receive, max_bytes: int) -> Receive:
    """`receive` that raises a 413 once the body read so far is over `max_bytes` (the route
    renders it as the client's family's error)."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise HTTPException(413)
        return message

    return limited_receive


Handler = Callable[[Request], Awaitable[Response]]


class ProxyLane:
    """Serves `POST <path>` for the proxy's routes straight from their handler functions.

    `TollgateApp` calls it before FastAPI's own stack: the application's middleware,
    exception handling, routing and the request/response wrappers measured more CPU per
    proxied request than auth, caps and metering together. So the lane does the two things
    the middleware would (request ids, the body-size limit) itself. The routes stay
    registered with FastAPI too (OpenAPI, other methods); errors render exactly as there.
    """

    def __init__(self, routes: Mapping[str, Handler], max_bytes: int) -> None:
        self.routes = dict(routes)
        self.max_bytes = max_bytes

    def handler(self, scope: Scope) -> Handler | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        return self.routes.get(scope["path"])

    async def serve(self, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter_ns()
        given = declared = traced = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
            elif name == b"x-trace-id":
                traced = value
        request_id = given if given and _SANE_REQUEST_ID.fullmatch(given) else new_request_id()
        trace_id = sane_trace_id(traced) or request_id
        state = scope.setdefault("state", {})
        state["request_id"], state["trace_id"], state["started_ns"] = request_id, trace_id, started
        response: Response
        if declared is not None and _too_large(declared, self.max_bytes):
            response = _too_large_response(scope["path"], self.max_bytes)
        else:
            try:
                response = await handler(Request(scope, limited(receive, self.max_bytes)))
            except Exception as exc:
                response = render_exception(scope["path"], exc, None)
        ids = request_id.encode("latin-1")
        response.raw_headers += [
            (b"x-request-id", ids), (b"request-id", ids), (b"x-trace-id", trace_id.encode()),
        ]  # fmt: skip
        await response(scope, receive, send)
