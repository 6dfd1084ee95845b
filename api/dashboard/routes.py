"""`/dashboard`: signing in and out, the static assets, and every page's router.

Every write a page makes calls the JSON API's own handler for it, with the signed-in master
key's principal: the same validation, cache invalidation and after-commit hooks as a `curl`.
ADR 0010 says why the pages are server-rendered.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import keys, pages, search, usage
from api.dashboard.render import DashboardRoute, page, redirect, safe_next
from api.dashboard.session import (
    LOGIN_TTL_SECONDS,
    SignedIn,
    check_origin,
    check_token,
    clear_cookie,
    login_cookie,
    new_login_token,
    posted_form,
    session_cookie,
    set_cookie,
    sign_in,
    sign_out,
)
from api.deps import AppSettings, DbSession, Pepper
from api.errors import AppError, NotFound

router = APIRouter(prefix="/dashboard", route_class=DashboardRoute, include_in_schema=False)
router.include_router(keys.router)
router.include_router(usage.router)
router.include_router(pages.router)
router.include_router(search.router)

_ASSETS = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}


@functools.cache
def _asset(name: str) -> bytes:
    return (resources.files("api.dashboard") / "static" / name).read_bytes()


@router.get("/static/{name}")
async def static_asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound("No such file.")
    headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(_asset(name), media_type=media_type, headers=headers)


@router.get("")
async def home() -> Response:
    return redirect("/dashboard/keys")


@router.get("/login")
async def login_form(request: Request, settings: AppSettings, next: str | None = None) -> Response:
    return _login_page(request, settings, next_path=safe_next(next))


def _login_page(
    request: Request,
    settings: AppSettings,
    *,
    next_path: str,
    status_code: int = 200,
    error: str | None = None,
) -> Response:
    token = new_login_token()
    response = page(
        request, None, "login.html", status_code=status_code, login_token=token,
        next_path=next_path, error=error,
    )  # fmt: skip
    set_cookie(response, settings, login_cookie(settings), token, LOGIN_TTL_SECONDS)
    return response


@router.post("/login")
async def login(
    request: Request, session: DbSession, pepper: Pepper, settings: AppSettings
) -> Response:
    check_origin(request)
    form = await request.form(max_files=0, max_fields=10)
    check_token(form.get("login_token"), request.cookies.get(login_cookie(settings)))
    next_path = safe_next(str(form.get("next") or ""))
    secret = form.get("master_key")
    if not isinstance(secret, str) or not secret.strip():
        return _login_page(request, settings, next_path=next_path, status_code=400,
                           error="Enter your master key.")  # fmt: skip
    try:
        token, row = await sign_in(session, pepper, settings, secret)
    except AppError as error:
        # One message for a wrong key and a standard one: the form says nothing of which.
        message = "That is not a valid master key." if error.status_code != 402 else error.message
        return _login_page(request, settings, next_path=next_path,
                           status_code=error.status_code, error=message)  # fmt: skip
    response = redirect(next_path)
    seconds = int((row.expires_at - row.created_at).total_seconds())
    set_cookie(response, settings, session_cookie(settings), token, seconds)
    clear_cookie(response, settings, login_cookie(settings))
    return response


@router.post("/logout")
async def logout(
    request: Request, signed: SignedIn, session: DbSession, settings: AppSettings
) -> Response:
    await posted_form(request, signed)
    await sign_out(session, signed.token_hash)
    response = redirect("/dashboard/login")
    clear_cookie(response, settings, session_cookie(settings))
    return response
