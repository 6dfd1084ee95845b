"""A budget alert as an email: the figures in plain text, one message to the tenant's recipients.

The Message-ID is derived from the alert's id, so a message resent after an unrecorded success
is recognisably the same one.
"""

from __future__ import annotations

import re
from decimal import Decimal
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from api.alert.models import Alert
from api.kit.mail import Mailer, SmtpConfig
from api.kit.money import MICROS_PER_USD
from api.kit.time import isoformat
from api.settings import Settings

_PERIODS = {"day": "daily", "month": "monthly", "total": "total"}
_METRICS = {
    "spend_usd": "spend",
    "requests": "request",
    "tokens": "token",
    "audio_seconds": "audio seconds",
    "characters": "character",
    "images": "image",
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]+")


def one_line(name: str) -> str:
    """A key's or tenant's name as a header takes it: line breaks and control characters are
    spaces (a name is the tenant's text; it never adds a header)."""
    return _CONTROL.sub(" ", name).strip()


def mailer_from_settings(settings: Settings) -> Mailer | None:
    """The operator's SMTP server, or None when `TOLLGATE_SMTP_HOST` is unset."""
    if not settings.smtp_host or not settings.smtp_from:
        return None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return Mailer(
        SmtpConfig(
            host=settings.smtp_host,
            port=settings.smtp_port,
            tls=settings.smtp_tls,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=password,
        )
    )


def usd(micros: int) -> str:
    """E.g. "$8.00" or "$0.000123": cents at least, and every micro-dollar there is."""
    text = f"{Decimal(micros) / MICROS_PER_USD:,.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def amount(alert: Alert, value: int) -> str:
    return usd(value) if alert.metric == "spend_usd" else f"{value:,} {alert.metric}"


def subject(alert: Alert, owner_name: str) -> str:
    period = _PERIODS.get(alert.period, alert.period)
    metric = _METRICS.get(alert.metric, alert.metric)
    return (
        f"Tollgate: {alert.scope} {one_line(owner_name)} reached {alert.threshold} % "
        f"of its {period} {metric} limit"
    )


def compose(
    alert: Alert, *, owner_name: str, tenant_name: str, recipients: list[str], sender: str
) -> EmailMessage:
    owner_name, tenant_name = one_line(owner_name), one_line(tenant_name)
    share = f" ({alert.used * 100 / alert.max:.1f} %)" if alert.max else ""
    who = (
        f'Key "{owner_name}" (id {alert.owner_id})'
        if alert.scope == "key"
        else f'Tenant "{owner_name}" (all of its keys together)'
    )
    period = _PERIODS.get(alert.period, alert.period)
    metric = _METRICS.get(alert.metric, alert.metric)
    after = (
        "At 100 % further requests are refused (402) until the period ends or the limit is raised."
        if alert.threshold < 100
        else "Further requests are refused (402) until the period ends or the limit is raised."
    )
    lines = [
        f"{who} reached {alert.threshold} % of its {period} {metric} limit.",
        "",
        f"  Used:       {amount(alert, alert.used)} of {amount(alert, alert.max)}{share}",
        f"  Threshold:  {alert.threshold} %",
        f"  Limit:      {alert.metric} per {alert.period}",
        f"  Period:     {alert.period_tag}",
        f"  Scope:      {alert.scope}" + (f" {alert.owner_id}" if alert.scope == "key" else ""),
        f"  Tenant:     {tenant_name}",
        f"  Alert id:   {alert.id}",
        f"  Fired at:   {isoformat(alert.created_at)}",
        "",
        after,
        "This alert is sent once per limit, period and threshold; GET /v1/alerts lists them all.",
    ]
    message = EmailMessage()
    message["Subject"] = subject(alert, owner_name)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tollgate"
    message["Message-ID"] = f"<alert-{alert.id}@{domain}>"
    message.set_content("\n".join(lines) + "\n")
    return message
