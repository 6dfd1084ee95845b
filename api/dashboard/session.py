"""Signing in with a master key, the session cookie, and the CSRF token every form carries.

- **The cookie** holds a random token; the database keeps only its SHA-256, so a leaked table
  signs no one in. It is HttpOnly, SameSite=Strict, Secure (`__Host-` prefixed) unless
  `TOLLGATE_DASHBOARD_SECURE_COOKIE=false`, and lasts `TOLLGATE_DASHBOARD_SESSION_MINUTES`.
- **Each request re-checks the master secret** that signed in, by its hash: rotated out,
  expired or suspended, and the session ends with it, as the API would refuse the secret.
- **CSRF:** every form posts the session's token (the synchronizer-token pattern), compared in
  constant time, and a post whose `Origin` is another site is refused before that. Signing in
  has no session yet: its form carries a token matched against a short-lived cookie of its own
  (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import service as auth_service
from api.auth.secrets import hash_secret
from api.dashboard.models import DashboardSession
from api.dashboard.repository import (
    DashboardSessionRepository,
    delete_by_token_hash_unscoped,
    find_by_token_hash_unscoped,
)
from api.deps import DbSession
from api.errors import AppError, InsufficientScope
from api.kit import nul
from api.kit.time import utcnow
from api.settings import Settings

LOGIN_PATH = "/dashboard/login"
LOGIN_TTL_SECONDS = 600  # how long a login form stays valid


class LoginRequired(Exception):
    """No valid session: the dashboard's routes answer with a redirect to the login page."""


class CsrfRejected(Exception):
    """A form post without the session's token, or from another site: 403."""


@dataclass(frozen=True, slots=True)
class Signed:
    """The signed-in tenant: its master key's principal and the session's CSRF token."""

    principal: auth_service.Principal
    csrf_token: str
    token_hash: str
    secret_hash: str  # of the master secret that signed in


def session_cookie(settings: Settings) -> str:
    return "__Host-tollgate_session" if settings.dashboard_secure_cookie else "tollgate_session"


def login_cookie(settings: Settings) -> str:
    return "__Host-tollgate_login" if settings.dashboard_secure_cookie else "tollgate_login"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_cookie(response: Response, settings: Settings, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name, value, max_age=seconds, path="/", secure=settings.dashboard_secure_cookie,
        httponly=True, samesite="strict",
    )  # fmt: skip


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        name, path="/", secure=settings.dashboard_secure_cookie, httponly=True, samesite="strict"
    )


async def sign_in(
    session: AsyncSession, pepper: bytes, settings: Settings, secret: str
) -> tuple[str, DashboardSession]:
    """A new session for a master secret: (the cookie's token, the row). A wrong or standard
    key raises what the API would answer it (401, 402, 403)."""
    principal = await auth_service.authenticate(session, pepper, secret.strip())
    if not principal.is_master:
        raise InsufficientScope("Only a master key can sign in to the dashboard.")
    now = utcnow()
    repository = DashboardSessionRepository(session, principal.tenant_id)
    await repository.forget_expired(now)
    token = secrets.token_urlsafe(32)
    row = DashboardSession(
        tenant_id=principal.tenant_id,
        token_hash=_digest(token),
        secret_hash=hash_secret(pepper, secret.strip()),
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(minutes=settings.dashboard_session_minutes),
    )
    session.add(row)
    await session.flush()
    return token, row


async def sign_out(session: AsyncSession, token_hash: str) -> None:
    await delete_by_token_hash_unscoped(session, token_hash)


async def sign_out_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Every session of the tenant ends (its master key was rotated)."""
    await DashboardSessionRepository(session, tenant_id).forget_all()


async def _signed(request: Request, session: DbSession) -> Signed:
    settings: Settings = request.state.settings
    token = request.cookies.get(session_cookie(settings))
    if not token:
        raise LoginRequired()
    token_hash = _digest(token)
    row = await find_by_token_hash_unscoped(session, token_hash)
    if row is None or row.expires_at <= utcnow():
        raise LoginRequired()
    try:
        principal = await auth_service.authenticate_hash(session, row.secret_hash)
    except AppError:  # the master secret was rotated out, or the tenant suspended
        raise LoginRequired() from None
    if not principal.is_master or principal.tenant_id != row.tenant_id:
        raise LoginRequired()
    return Signed(
        principal=principal,
        csrf_token=row.csrf_token,
        token_hash=token_hash,
        secret_hash=row.secret_hash,
    )


SignedIn = Annotated[Signed, Depends(_signed)]


def check_origin(request: Request) -> None:
    """A post must come from a page of this dashboard. Browsers say where it came from in
    `Sec-Fetch-Site` (every current one): only `same-origin` passes (`none`: typed in the
    address bar). Older ones send `Origin` alone; then it must name this host. The host is
    the one the browser asked for: behind a proxy that rewrites `Host`, `Sec-Fetch-Site` is
    what decides, which is why it comes first."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise CsrfRejected()
        return
    origin = request.headers.get("origin")
    if origin is None:
        return  # a browser from before both headers; the form's token still has to match
    if origin == "null" or urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CsrfRejected()


def check_token(presented: object, expected: str | None) -> None:
    if (
        not expected
        or not isinstance(presented, str)
        or not hmac.compare_digest(presented.encode(), expected.encode())
    ):
        raise CsrfRejected()


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


async def posted_form(request: Request, signed: Signed) -> dict[str, str]:
    """A form post's fields, once its origin and CSRF token are checked. Repeated fields keep
    their last value; files are refused (no dashboard form uploads one)."""
    check_origin(request)
    form = await request.form(max_files=0, max_fields=200)
    check_token(form.get("csrf"), signed.csrf_token)
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    for name, value in fields.items():
        nul.check_text(value, name)  # as the API refuses it in JSON
    return fields
