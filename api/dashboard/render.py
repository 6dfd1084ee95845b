"""Pages: the Jinja environment, the response headers every page carries, and the route class
that turns a missing session, a forged post or an API error into a page rather than JSON."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.dashboard.session import LOGIN_PATH, CsrfRejected, LoginRequired, Signed
from api.error_handlers import validation_error
from api.errors import AppError

# No script or style from anywhere but this server, none inline, and no framing.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def usd(micros: int | None) -> str:
    """Micro-USD as dollars for people: cents always, and more digits only when they count."""
    if micros is None:
        return "—"
    amount = Decimal(micros) / 1_000_000
    return f"${amount:,.2f}" if micros % 10_000 == 0 else f"${amount:,.6f}".rstrip("0")


def when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def plain(value: int | float | None, empty: str = "—") -> str:
    """A number as written by hand: 0.000012, not 1.2e-05; 10, not 10.0."""
    if value is None:
        return empty
    text = format(Decimal(str(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@functools.cache
def environment() -> Environment:
    folder = resources.files("api.dashboard") / "templates"
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, when=when, number=number, plain=plain)
    return env


def page(
    request: Request,
    signed: Signed | None,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    template_ = environment().get_template(template)
    body = template_.render(
        request=request,
        path=request.url.path,
        csrf=signed.csrf_token if signed is not None else None,
        signed=signed,
        **context,
    )
    return HTMLResponse(body, status_code=status_code, headers=_HEADERS)


def error_page(error: AppError) -> HTMLResponse:
    """An error as a page, for what fails before a dashboard route runs (an unknown page, a
    wrong method) or outside it: the app's handlers call this for paths under /dashboard."""
    body = (
        environment()
        .get_template("error.html")
        .render(signed=None, csrf=None, status=error.status_code, message=error.message)
    )
    return HTMLResponse(body, status_code=error.status_code, headers={**_HEADERS, **error.headers})


def redirect(location: str) -> RedirectResponse:
    """After a post: 303, so a reload does not post again."""
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if value and value.startswith("/dashboard") and not any(c in value for c in "\\\r\n"):
        return value
    return "/dashboard/keys"


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DashboardRoute(APIRoute):
    """A dashboard route: no session redirects to the login page, a forged post is a 403 page
    and an error the API would answer as JSON is the same status as a page."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                return redirect(f"{LOGIN_PATH}?next={quote(safe_next(target), safe='/')}")
            except CsrfRejected:
                return page(
                    request, None, "error.html", status_code=403, status=403,
                    message="This form was not sent from this dashboard, or its page is too old. "
                    "Reload the page and try again.",
                )  # fmt: skip
            except (AppError, RequestValidationError) as exc:  # a query value out of range too
                error = validation_error(exc) if isinstance(exc, RequestValidationError) else exc
                return page(request, None, "error.html", status_code=error.status_code,
                            message=error.message, status=error.status_code)  # fmt: skip

        return guarded
