"""Signing in to the dashboard from a test, as a browser does: the login form's token, the
master key, then the session cookie (httpx sends `Secure` cookies only over https, so the
client's base URL is https; the ASGI transport does not care)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
from asgi_lifespan import LifespanManager

from api.app import create_app
from api.settings import Settings

BASE_URL = "https://tollgate.test"


@contextlib.asynccontextmanager
async def dashboard_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with LifespanManager(app, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


def field(html: str, name: str) -> str:
    """The value of the first input named `name` in a page."""
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found is not None, f"no field {name!r} in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, master_key: str) -> str:
    """Sign in with `master_key`; the session's CSRF token, read from a page as a form would."""
    form = await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login",
        data={"login_token": field(form.text, "login_token"), "master_key": master_key},
    )
    assert response.status_code == 303, response.text
    page = await client.get("/dashboard/keys")
    assert page.status_code == 200, page.text
    return field(page.text, "csrf")
