"""Settings: each group of `/v1/settings` (failover, routing, alerts, limits, the caches,
retention, the shield) as its JSON in a labelled text box, one form per group.

JSON rather than a form field per setting: the groups are nested (limits, shield rules) and
grow with the API; the text box is exactly what `PUT /v1/settings` takes, checked by the same
`SettingsUpdate` and saved by the same handler, so its after-commit hooks (key cache, budgets,
routing) run as for a `curl`. Text that is not JSON, or not valid for the group, answers 400
with the problem named and the text kept, so nothing typed is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard.forms import pretty, validated
from api.dashboard.render import DashboardRoute, page, redirect
from api.dashboard.session import SignedIn, posted_form
from api.deps import DbSession
from api.errors import InvalidRequest
from api.tenant import routes as tenant_routes
from api.tenant import service as tenant_service
from api.tenant.schemas import SettingsRead, SettingsUpdate

router = APIRouter(prefix="/settings", route_class=DashboardRoute)


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    label: str
    help: str


GROUPS = (
    Group("failover", "Failover", '{"enabled": true}: when every account of the requested '
          "provider fails, an equivalent model on another provider answers."),
    Group("routing", "Routing", 'How accounts are ordered: "strategy" is one of "default", '
          '"weighted", "cost", "latency", "round_robin".'),
    Group("alerts", "Budget alerts", '"webhook_url" receives signed budget alerts; "emails" '
          "(up to 20) are mailed them."),
    Group("limits", "Tenant limits", 'Caps on all keys together: a list of {"metric", "period", '
          '"max"}, the period "day", "month" or "total", spend_usd in dollars. [] removes them.'),
    Group("cache", "Response cache", "Identical requests answered from a stored answer for "
          '"ttl_seconds"; a hit bills "billed_fraction" of what it saved.'),
    Group("semantic_cache", "Semantic cache", "Questions asked in other words answered from the "
          'response cache (which must be on) at a similarity of at least "threshold".'),
    Group("retention", "Retention", 'Days request traces ("trace_days") and request-log rows '
          '("log_days") are kept; null: the server\'s default.'),
    Group("shield", "Secret shield", "Secrets and personal data masked in request bodies "
          "before a provider sees them: presets, your own rules, and what happens on a timeout."),
)  # fmt: skip
BY_NAME = {group.name: group for group in GROUPS}
NOTICE = "{label} saved."


def editable(settings: SettingsRead) -> dict[str, Any]:
    """Each group as `PUT /v1/settings` takes it: what is only shown (a limit's use, whether an
    alert signing secret is set) is left out."""
    groups: dict[str, Any] = settings.model_dump(mode="json", exclude={"object"})
    groups["limits"] = [
        {"metric": item.metric, "period": item.period, "max": item.max} for item in settings.limits
    ]
    groups["alerts"] = {"webhook_url": settings.alerts.webhook_url,
                        "emails": settings.alerts.emails}  # fmt: skip
    return groups


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parsed_update(group: str, text: str) -> SettingsUpdate:
    """One group's posted text as the API's own update; an InvalidRequest naming the problem."""
    if group not in BY_NAME:
        raise InvalidRequest("There is no such settings group.", param="group")
    if not text.strip():
        raise InvalidRequest(f"{group}: enter a JSON value (null restores the defaults).",
                             param=group)  # fmt: skip
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{group}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            param=group,
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN or Infinity; nesting Python cannot read
        reason = str(exc) if isinstance(exc, ValueError) else "it nests too deeply"
        raise InvalidRequest(f"{group}: not valid JSON: {reason}.", param=group) from None
    update: SettingsUpdate = validated(SettingsUpdate, {group: value})
    return update


async def _settings_page(
    request: Request,
    session: DbSession,
    signed: SignedIn,
    *,
    status_code: int = 200,
    notice: str | None = None,
    failed: tuple[str, str, str] | None = None,
    secret: str | None = None,
) -> Response:
    """`failed`: (group, the text posted, what is wrong with it), shown in place of the saved
    value."""
    settings = tenant_service.render_settings(
        await tenant_service.get_tenant(session, signed.principal.tenant_id)
    )
    values = editable(settings)
    groups = []
    for group in GROUPS:
        text, error = pretty(values[group.name]), None
        if failed is not None and failed[0] == group.name:
            text, error = failed[1], failed[2]
        groups.append({"group": group, "text": text, "error": error})
    return page(
        request, signed, "settings.html", status_code=status_code, groups=groups,
        signing_secret_set=settings.alerts.signing_secret_set, secret=secret, notice=notice,
        nav="settings",
    )  # fmt: skip


@router.get("")
async def show_settings(
    request: Request, session: DbSession, signed: SignedIn, done: str | None = None
) -> Response:
    saved = BY_NAME.get(done or "")
    notice = NOTICE.format(label=saved.label) if saved else None
    return await _settings_page(request, session, signed, notice=notice)


@router.post("")
async def save_settings(request: Request, session: DbSession, signed: SignedIn) -> Response:
    form = await posted_form(request, signed)
    group, text = form.get("group", ""), form.get("value", "")
    try:
        data = parsed_update(group, text)
    except InvalidRequest as error:
        if group not in BY_NAME:
            raise
        # Nothing was written: the page again, the text as typed, the problem beside it.
        return await _settings_page(
            request, session, signed, status_code=400, failed=(group, text, error.message)
        )
    await tenant_routes.update_settings(request, data, session, signed.principal)
    return redirect(f"/dashboard/settings?done={group}")


@router.post("/webhook-secret")
async def new_webhook_secret(request: Request, session: DbSession, signed: SignedIn) -> Response:
    """A new signing secret for alerts and job webhooks, shown in this answer only."""
    await posted_form(request, signed)
    made = await tenant_routes.create_webhook_secret(request, session, signed.principal)
    notice = "New signing secret made. Copy it now: it is not shown again."
    return await _settings_page(request, session, signed, notice=notice, secret=made.secret)
