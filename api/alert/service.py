"""Budget alerts: at 50 %, 80 % and 100 % of a limit, one signed webhook and one email (to the
tenant's `alerts.emails`, through the operator's SMTP server) per limit and period.

A crossing is detected when a settlement moves a counter over a threshold. The alert row's
unique key (limit, period, threshold) makes each alert fire once, however many processes see
the crossing. Each channel is delivered and retried on its own, with backoff; the row records
each one's attempts and outcome, and a channel delivered is never sent again. Alerts still
undelivered on a channel after that (the receiver was down, the process stopped) are resent by
a sweep every minute (`resend_undelivered`: the worker's cron, or in-process without Redis),
for a day and up to `MAX_ATTEMPTS` per channel. Receivers deduplicate on the alert's `id`
(an email's Message-ID carries it); an email attempt is claimed in the database before it is
sent, so two processes never mail the same alert at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.alert import repository
from api.alert.email import compose
from api.alert.models import Alert
from api.auth.limits import Limit
from api.auth.models import ApiKey
from api.db import insert_ignoring_conflicts
from api.kit.crypto import SecretBox
from api.kit.mail import Mailer, error_text
from api.kit.money import micros_to_usd
from api.kit.time import isoformat, utcnow
from api.kit.webhook_client import refused
from api.kit.webhooks import post_signed
from api.tenant.models import Tenant

logger = logging.getLogger("tollgate.alerts")

THRESHOLDS = (50, 80, 100)
RETRY_DELAYS_SECONDS = (1.0, 4.0, 16.0)
DELIVERY_TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 12
RESEND_AFTER = timedelta(minutes=1)
RESEND_FOR = timedelta(days=1)
CHANNELS = frozenset({"webhook", "email"})
# On shutdown, how long alerts that fired may take to be written. Their delivery is left to the
# resend sweep (the next process's, or a worker's): a write cut off by cancellation would lose
# the alert, and on SQLite leave its connection holding the write lock.
CLOSE_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Crossing:
    tenant_id: uuid.UUID
    scope: str
    owner_id: uuid.UUID
    limit: Limit
    period_tag: str
    threshold: int
    used: int


def crossings(
    tenant_id: uuid.UUID, counter: str, limit: Limit, before: int, after: int
) -> list[Crossing]:
    """The thresholds a settlement moved `counter` across (none for rate windows)."""
    if limit.period == "minute" or limit.max <= 0:
        return []
    scope, owner, period_tag, _ = counter.split(":")
    out = []
    for threshold in THRESHOLDS:
        bound = -(-limit.max * threshold // 100)
        if before < bound <= after:
            out.append(
                Crossing(tenant_id, scope, uuid.UUID(owner), limit, period_tag, threshold, after)
            )
    return out


def payload(alert: Alert) -> dict[str, Any]:
    spend = alert.metric == "spend_usd"
    body: dict[str, Any] = {
        "object": "alert",
        "id": str(alert.id),
        "type": "budget.threshold_reached",
        "scope": alert.scope,
        "key_id": str(alert.owner_id) if alert.scope == "key" else None,
        "metric": alert.metric,
        "period": alert.period,
        "period_tag": alert.period_tag,
        "threshold": alert.threshold,
        "max": micros_to_usd(alert.max) if spend else alert.max,
        "used": micros_to_usd(alert.used) if spend else alert.used,
        "created_at": isoformat(alert.created_at),
        "delivered_at": isoformat(alert.delivered_at),
        "attempts": alert.attempts,
        "last_error": alert.last_error,
        "email": email_state(alert),
    }
    if spend:
        body["max_micros"], body["used_micros"] = alert.max, alert.used
    return body


def email_state(alert: Alert) -> dict[str, Any] | None:
    """The email channel's delivery (None: the tenant had no `alerts.emails` when it fired)."""
    if not alert.email_recipients:
        return None
    return {
        "recipients": list(alert.email_recipients),
        "delivered_at": isoformat(alert.email_delivered_at),
        "attempts": alert.email_attempts,
        "last_error": alert.email_last_error,
    }


class AlertNotifier:
    """`http` comes from `create_webhook_client`: it refuses private addresses (unless allowed)
    as each connection is made, whatever the tenant's host resolved to when it was saved."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        box: SecretBox,
        *,
        mailer: Mailer | None = None,
        retry_delays: Sequence[float] = RETRY_DELAYS_SECONDS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._http = http
        self._box = box
        self._mailer = mailer
        self._retry_delays = retry_delays
        self._pending: set[asyncio.Task[None]] = set()
        self._firing: set[asyncio.Task[None]] = set()
        self._closing = False

    def crossed(self, found: list[Crossing]) -> None:
        for crossing in found:
            task = asyncio.get_running_loop().create_task(self._fire(crossing))
            for tasks in (self._pending, self._firing):
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    def start_sweep(self, every_seconds: float = 60.0) -> None:
        """Run `resend_undelivered` in this process (where no worker does)."""

        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_seconds)
                try:
                    await self.resend_undelivered()
                except Exception:
                    logger.exception("the budget alert resend sweep failed")

        task = asyncio.get_running_loop().create_task(sweep(), name="alert-resend")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Let every alert that fired be written (not delivered: see CLOSE_GRACE_SECONDS), then
        cancel what is left."""
        self._closing = True
        if self._firing:
            await asyncio.wait(set(self._firing), timeout=CLOSE_GRACE_SECONDS)
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _fire(self, crossing: Crossing) -> None:
        try:
            alert_id = await self._record(crossing)
            # None: another request or process fired it already. Closing: the sweep delivers.
            if alert_id is not None and not self._closing:
                await self._deliver(alert_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("budget alert for %s failed", crossing)

    async def _record(self, crossing: Crossing) -> uuid.UUID | None:
        alert_id = uuid.uuid4()
        row = {
            "id": alert_id, "tenant_id": crossing.tenant_id, "scope": crossing.scope,
            "owner_id": crossing.owner_id, "metric": crossing.limit.metric,
            "period": crossing.limit.period, "period_tag": crossing.period_tag,
            "threshold": crossing.threshold, "max": crossing.limit.max, "used": crossing.used,
            "created_at": utcnow(), "attempts": 0,
        }  # fmt: skip
        async with self._sessionmaker() as session, session.begin():
            tenant = await session.get(Tenant, crossing.tenant_id)
            emails = (tenant.settings.get("alerts") or {}).get("emails") if tenant else None
            if emails:  # who is mailed is decided as it fires
                row["email_recipients"] = list(emails)
            statement = insert_ignoring_conflicts(session, Alert).values(**row)
            result = await session.execute(statement.returning(Alert.id))
            return result.scalar_one_or_none()

    async def resend_undelivered(self) -> int:
        """One more attempt for each alert no delivery has succeeded for; returns how many."""
        now = utcnow()
        async with self._sessionmaker() as session:
            due = await repository.undelivered_unscoped(
                session,
                created_after=now - RESEND_FOR,
                created_before=now - RESEND_AFTER,
                max_attempts=MAX_ATTEMPTS,
            )
        for alert_id in due:
            try:
                await self._attempt(alert_id)
            except Exception:
                logger.exception("resending budget alert %s failed", alert_id)
        return len(due)

    async def _deliver(self, alert_id: uuid.UUID) -> None:
        pending = CHANNELS
        for delay in [0.0, *self._retry_delays]:
            await asyncio.sleep(delay)
            if self._closing:
                return  # what is left is the resend sweep's
            pending = await self._attempt(alert_id, pending)
            if not pending:
                return

    async def _attempt(
        self, alert_id: uuid.UUID, channels: frozenset[str] = frozenset()
    ) -> frozenset[str]:
        """One delivery on each of `channels` (default: both) still due; returns those where
        there is more to try."""
        left: set[str] = set()
        if (not channels or "webhook" in channels) and not await self._attempt_webhook(alert_id):
            left.add("webhook")
        if (not channels or "email" in channels) and not await self._attempt_email(alert_id):
            left.add("email")
        return frozenset(left)

    async def _attempt_webhook(self, alert_id: uuid.UUID) -> bool:
        """One webhook delivery; True when there is nothing more to try."""
        async with self._sessionmaker() as session, session.begin():
            alert = await session.get(Alert, alert_id)
            tenant = await session.get(Tenant, alert.tenant_id) if alert else None
            if alert is None or tenant is None or alert.delivered_at is not None:
                return True
            if alert.attempts >= MAX_ATTEMPTS:
                return True
            url = (tenant.settings.get("alerts") or {}).get("webhook_url")
            alert.attempts += 1
            if not url or not tenant.webhook_secret:
                alert.last_error = "no alerts.webhook_url or webhook secret configured"
                return True
            body = orjson.dumps(payload(alert))
            secret = self._box.open(tenant.webhook_secret)
        error = await self._post(url, secret, body)
        async with self._sessionmaker() as session, session.begin():
            stored = await session.get(Alert, alert_id)
            if stored is None:
                return True
            stored.last_error = error
            if error is None:
                stored.delivered_at = utcnow()
        return error is None

    async def _attempt_email(self, alert_id: uuid.UUID) -> bool:
        """One email delivery; True when there is nothing more to try."""
        async with self._sessionmaker() as session, session.begin():
            alert = await session.get(Alert, alert_id)
            if (
                alert is None
                or not alert.email_recipients
                or alert.email_delivered_at is not None
                or alert.email_attempts >= MAX_ATTEMPTS
            ):
                return True
            tenant = await session.get(Tenant, alert.tenant_id)
            if tenant is None:
                return True
            if self._mailer is None:
                alert.email_attempts += 1
                alert.email_last_error = "no SMTP server configured (TOLLGATE_SMTP_HOST)"
                return True
            owner_name = tenant.name
            if alert.scope == "key":
                key = await session.get(ApiKey, alert.owner_id)
                owner_name = key.name if key and key.tenant_id == tenant.id else str(alert.owner_id)
            message = compose(
                alert, owner_name=owner_name, tenant_name=tenant.name,
                recipients=list(alert.email_recipients), sender=self._mailer.sender,
            )  # fmt: skip
            attempts = alert.email_attempts
            if not await repository.claim_email_attempt_unscoped(session, alert_id, attempts):
                return True  # another process is sending it now
        try:
            refused = await self._mailer.send(message)
        except Exception as exc:
            error: str | None = error_text(exc)
            sent = False
        else:
            error = f"refused by the server: {', '.join(refused)}"[:200] if refused else None
            sent = True
        async with self._sessionmaker() as session, session.begin():
            stored = await session.get(Alert, alert_id)
            if stored is None:
                return True
            stored.email_last_error = error
            if sent:
                stored.email_delivered_at = utcnow()
        return sent

    async def _post(self, url: str, secret: str, body: bytes) -> str | None:
        """One attempt; None on a 2xx, else what went wrong."""
        try:
            status = await post_signed(
                self._http, url, secret, body, timeout_seconds=DELIVERY_TIMEOUT_SECONDS
            )
        except httpx.InvalidURL:
            return "alerts.webhook_url is not a valid URL"
        except httpx.HTTPError as exc:
            if refused(exc):
                return "alerts.webhook_url: the host resolves to a private or loopback address"
            return f"{type(exc).__name__}"[:200]
        return None if 200 <= status < 300 else f"HTTP {status}"
