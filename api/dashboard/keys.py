"""Keys: the list with this month's spend against each cap, one key's limits, and the forms
that create, limit, rotate and revoke (through `/v1/keys`'s own handlers)."""

from __future__ import annotations

import hmac
import re
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.auth import limits as limit_rules
from api.auth import routes as key_routes
from api.auth import service as key_service
from api.auth.schemas import KeyCreate, KeyRotate, KeyUpdate
from api.auth.secrets import hash_secret
from api.dashboard.forms import Cursor, validated
from api.dashboard.render import DashboardRoute, page, redirect
from api.dashboard.session import (
    SignedIn,
    clear_cookie,
    posted_form,
    session_cookie,
    sign_out_tenant,
)
from api.deps import AppSettings, DbSession, Pepper
from api.errors import InvalidRequest
from api.kit.ids import parse_id
from api.kit.pagination import MAX_LIMIT
from api.kit.time import month_start, utcnow
from api.usage.repository import UsageRepository

router = APIRouter(prefix="/keys", route_class=DashboardRoute)

METRICS = ("spend_usd", "requests", "tokens", "audio_seconds", "characters", "images")
PERIODS = ("day", "month", "total")  # "minute" is rpm and tpm, set in their own fields
# What a redirect after a post may say: fixed sentences, never text from the request.
NOTICES = {
    "limits": "Limits saved.",
    "revoked": "The key is revoked: requests with it now get 401.",
    "renamed": "Saved.",
}


def micros_to_decimal(micros: int) -> Decimal:
    return Decimal(micros) / 1_000_000


# What a person types: digits, an optional decimal point, and commas only as thousands
# separators ("1,250.50"). A decimal comma ("10,50") is refused rather than read as 1050;
# exponents ("1e999999") are refused before anything computes with them.
_AMOUNT = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d{1,15})(?:\.\d{1,6})?")
_WHOLE = re.compile(r"\d{1,15}")


def _amount(value: str, name: str, *, whole: bool = False) -> str | None:
    """A form's number as the text the API's schema parses (its bounds apply there), or None
    when the field is empty."""
    value = value.strip().removeprefix("$").strip()
    if not value:
        return None
    if not (_WHOLE if whole else _AMOUNT).fullmatch(value):
        shape = "a whole number" if whole else "an amount such as 12.50 (a point for decimals)"
        raise InvalidRequest(f"{name}: enter {shape}.", param=name)
    return value.replace(",", "")


async def _list_page(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    cursor: str | None,
    *,
    created: Any = None,
    status_code: int = 200,
) -> Response:
    principal = signed.principal
    listed = await key_service.list_keys(session, principal, limit=MAX_LIMIT, cursor=cursor)
    now = utcnow()
    spend = await UsageRepository(session, principal.tenant_id).spend_by_key(month_start(now), now)
    rows = []
    for key in listed.items:
        cap = limit_rules.monthly_spend([limit_rules.Limit.from_json(i) for i in key.limits])
        used = spend.get(key.id, 0)
        rows.append(
            {
                "key": key,
                "status": key.status_at(now),
                "spend": used,
                "cap": cap,
                "percent": None if not cap else min(100, round(100 * used / cap)),
                "limits": len(key.limits),
            }
        )
    return page(
        request, signed, "keys.html", status_code=status_code, rows=rows, page_of=listed,
        created=created, nav="keys",
    )  # fmt: skip


@router.get("")
async def list_keys(
    request: Request, session: DbSession, signed: SignedIn, cursor: Cursor = None
) -> Response:
    return await _list_page(request, session, signed, cursor)


@router.post("")
async def create_key(
    request: Request, session: DbSession, signed: SignedIn, pepper: Pepper
) -> Response:
    form = await posted_form(request, signed)
    data: dict[str, Any] = {"name": form.get("name", "").strip(), "test": "test" in form}
    cap = _amount(form.get("max_spend_usd", ""), "max_spend_usd")
    if cap is not None:
        data["max_spend_usd"] = cap
    body = validated(KeyCreate, data)
    created = await key_routes.create_key(request, body, session, signed.principal, pepper)
    # The secret is shown in this answer and never again: no redirect can carry it.
    return await _list_page(request, session, signed, None, created=created, status_code=201)


async def _key_page(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    key_id: str,
    *,
    secret: str | None = None,
    notice: str | None = None,
) -> Response:
    key = await key_service.get_key(session, signed.principal, parse_id(key_id, "key"))
    read = await key_service.render_key(session, key)
    cap = limit_rules.monthly_spend([limit_rules.Limit.from_json(i) for i in key.limits])
    return page(
        request, signed, "key.html", key=read, cap_micros=cap, secret=secret, notice=notice,
        metrics=METRICS, periods=PERIODS, nav="keys",
    )  # fmt: skip


@router.get("/{key_id}")
async def show_key(
    request: Request, key_id: str, session: DbSession, signed: SignedIn, done: str | None = None
) -> Response:
    return await _key_page(request, session, signed, key_id, notice=NOTICES.get(done or ""))


@router.post("/{key_id}/limits")
async def set_limits(
    request: Request, key_id: str, session: DbSession, signed: SignedIn
) -> Response:
    """One form for the key's caps: the monthly spend cap, rpm and tpm (empty removes each),
    plus one more limit by metric and period (a max of 0 or empty removes that one)."""
    form = await posted_form(request, signed)
    key = await key_service.get_key(session, signed.principal, parse_id(key_id, "key"))
    current = [limit_rules.Limit.from_json(item) for item in key.limits]
    kept = [lim for lim in current if (lim.metric, lim.period) != ("spend_usd", "month")]
    limits: list[dict[str, Any]] = [
        {"metric": lim.metric, "period": lim.period,
         "max": micros_to_decimal(lim.max) if lim.metric == "spend_usd" else lim.max}
        for lim in kept
    ]  # fmt: skip
    data: dict[str, Any] = {"max_spend_usd": None, "rpm": None, "tpm": None}
    cap = _amount(form.get("max_spend_usd", ""), "max_spend_usd")
    metric, period = form.get("metric", ""), form.get("period", "")
    if metric or period:
        extra = _amount(form.get("max", ""), "max")
        limits = [lim for lim in limits if (lim["metric"], lim["period"]) != (metric, period)]
        if (metric, period) == ("spend_usd", "month"):  # the monthly cap, by another field
            if cap is not None and extra is not None and Decimal(cap) != Decimal(extra):
                raise InvalidRequest(
                    "Two monthly spend caps: give it once, in the monthly cap field.", param="max"
                )
            cap = extra if extra and Decimal(extra) else None
        elif extra and Decimal(extra):
            limits.append({"metric": metric, "period": period, "max": extra})
    data["limits"] = limits
    if cap is not None:
        data["max_spend_usd"] = cap
    for name in ("rpm", "tpm"):
        value = _amount(form.get(name, ""), name, whole=True)
        if value is not None:
            data[name] = value
    body = validated(KeyUpdate, data)
    await key_routes.update_key(request, key_id, body, session, signed.principal)
    return redirect(f"/dashboard/keys/{key.id}?done=limits")


@router.post("/{key_id}/rotate")
async def rotate_key(
    request: Request,
    key_id: str,
    session: DbSession,
    signed: SignedIn,
    pepper: Pepper,
    settings: AppSettings,
) -> Response:
    """Rotating the master key asks for it again (a stolen session must not turn into a
    master secret of its own), and signs every session of the tenant out."""
    form = await posted_form(request, signed)
    key = await key_service.get_key(session, signed.principal, parse_id(key_id, "key"))
    master = key.scope == key_service.MASTER
    if master:
        typed = form.get("current_master_key", "").strip()
        if not hmac.compare_digest(hash_secret(pepper, typed), signed.secret_hash):
            raise InvalidRequest(
                "Enter the current master key to rotate it.", param="current_master_key"
            )
    grace = _amount(form.get("grace_seconds", ""), "grace_seconds", whole=True) or 0
    body = validated(KeyRotate, {"grace_seconds": grace})
    rotated = await key_routes.rotate_key(request, key_id, session, signed.principal, pepper, body)
    notice = "Rotated. Copy the new secret now: it is not shown again."
    if not master:
        return await _key_page(
            request, session, signed, key_id, secret=rotated.secret, notice=notice
        )
    await sign_out_tenant(session, signed.principal.tenant_id)
    response = await _key_page(
        request, session, signed, key_id, secret=rotated.secret,
        notice=notice + " Every dashboard session has ended: sign in again with it.",
    )  # fmt: skip
    clear_cookie(response, settings, session_cookie(settings))
    return response


@router.post("/{key_id}/revoke")
async def revoke_key(
    request: Request, key_id: str, session: DbSession, signed: SignedIn
) -> Response:
    await posted_form(request, signed)
    key = await key_routes.revoke_key(request, key_id, session, signed.principal)
    return redirect(f"/dashboard/keys/{key.id}?done=revoked")
