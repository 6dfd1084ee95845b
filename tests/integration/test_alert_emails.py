"""Budget alerts by email: a real request flow through the gateway, mailed through a local SMTP
server (aiosmtpd) once per threshold, with the figures; retried while the server is down; each
tenant's recipients get only that tenant's alerts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncEngine
from tollgate.types import Alert as SdkAlert

from api.alert.email import mailer_from_settings
from api.alert.models import Alert
from api.alert.service import AlertNotifier
from api.app import create_app
from api.db import create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.settings import Settings
from tests.conftest import SECRET_KEY, app_client
from tests.factories.chat import HELLO
from tests.factories.tenants import TenantFixture, bearer, create_key, create_tenant
from tests.factories.usage import expected_cost_micros
from tests.fakes.server import serve_in_thread
from tests.fakes.upstream import FakeUpstream, billed_prompt_tokens

MINI = ("0.15", "0.075", "0.60")
SENDER = "Tollgate <alerts@tollgate.test>"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class Inbox:
    """The SMTP server's side: every message it accepted, with its envelope."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = cast(EmailMessage, message_from_bytes(envelope.content, policy=policy.default))
        with self._lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpServer:
    """aiosmtpd on a loopback port, which can be started late (the server being down). Until
    then the port is held by a socket that does not listen: connections are refused, and no
    other server of the test run can take it."""

    def __init__(self) -> None:
        self._reserved: socket.socket | None = socket.socket()
        self._reserved.bind(("127.0.0.1", 0))
        self.port: int = self._reserved.getsockname()[1]
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def settings(self, base: Settings) -> Settings:
        return base.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": self.port,
                "smtp_tls": "none",
                "smtp_from": SENDER,
            }
        )


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


async def _wait_for(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _set_emails(http: httpx.AsyncClient, tenant: TenantFixture, emails: list[str]) -> None:
    put = await http.put(
        "/v1/settings", json={"alerts": {"emails": emails}}, headers=tenant.headers
    )
    assert put.status_code == 200, put.text
    assert put.json()["alerts"]["emails"] == emails


async def _chat(http: httpx.AsyncClient, secret: str, max_tokens: int = 20) -> int:
    response = await http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": max_tokens},
        headers=bearer(secret),
    )
    return response.status_code


async def _alerts(http: httpx.AsyncClient, tenant: TenantFixture) -> list[dict[str, Any]]:
    response = await http.get("/v1/alerts", headers=tenant.headers)
    assert response.status_code == 200
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _usd(micros: int) -> str:
    text = f"{micros / 1_000_000:,.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


class TestAlertEmails:
    async def test_each_threshold_is_mailed_once_with_its_figures(
        self, gateway_settings: Settings, upstream: FakeUpstream, smtp: SmtpServer
    ):
        smtp.start()
        upstream.mode, upstream.words = "generate", 20
        one = expected_cost_micros(billed_prompt_tokens(HELLO), 0, 20, MINI)
        with serve_in_thread(create_app(smtp.settings(gateway_settings))) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tenant = await create_tenant(http)
                recipients = ["ops@acme.example", "Finance@Acme.example"]
                await _set_emails(http, tenant, recipients)
                key = await create_key(http, tenant, name="alice", max_spend_usd=10 * one / 1e6)
                statuses = []
                for _ in range(14):
                    statuses.append(await _chat(http, key["secret"]))
                    await asyncio.sleep(0.02)  # let each settlement land before the next
                assert statuses[-1] == 402
                await _wait_for(lambda: len(smtp.inbox.messages) >= 3)
                await asyncio.sleep(0.5)  # nothing more arrives
                listed = await _alerts(http, tenant)
        assert len(smtp.inbox.messages) == 3
        by_threshold = {a["threshold"]: a for a in listed}
        assert sorted(by_threshold) == [50, 80, 100]
        subjects = sorted(str(m.message["Subject"]) for m in smtp.inbox.messages)
        assert subjects == [
            f"Tollgate: key alice reached {t} % of its monthly spend limit" for t in (100, 50, 80)
        ]
        for alert in listed:  # each email's delivery state, beside the webhook's
            typed = SdkAlert.model_validate(alert)
            assert typed.email is not None
            assert typed.email.recipients == recipients
            assert typed.email.delivered_at is not None
            email = alert["email"]
            assert email["recipients"] == recipients
            assert email["delivered_at"] is not None
            assert (email["attempts"], email["last_error"]) == (1, None)
            assert alert["delivered_at"] is None  # no webhook URL set: that channel did not go
        eighty = next(m for m in smtp.inbox.messages if "80 %" in str(m.message["Subject"]))
        alert = by_threshold[80]
        assert eighty.mail_from == "alerts@tollgate.test"
        assert sorted(eighty.rcpt_tos) == sorted(recipients)
        assert str(eighty.message["From"]) == SENDER
        assert str(eighty.message["Message-ID"]).startswith(f"<alert-{alert['id']}@")
        body = eighty.message.get_content()
        assert alert["used_micros"] >= alert["max_micros"] * 80 // 100
        assert f"{_usd(alert['used_micros'])} of {_usd(alert['max_micros'])}" in body
        assert _usd(alert["max_micros"]) == _usd(10 * one)
        assert "Threshold:  80 %" in body
        assert f'Key "alice" (id {key["id"]})' in body
        assert "spend_usd per month" in body
        assert f"Period:     {alert['period_tag']}" in body
        assert alert["period_tag"].startswith("m")

    async def test_server_down_at_first_is_retried_and_mailed_once(
        self, gateway_settings: Settings, upstream: FakeUpstream, smtp: SmtpServer
    ):
        upstream.mode, upstream.words = "generate", 5
        with serve_in_thread(create_app(smtp.settings(gateway_settings))) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                tenant = await create_tenant(http)
                await _set_emails(http, tenant, ["ops@acme.example"])
                limit = {"metric": "requests", "period": "day", "max": 2}
                put = await http.put(
                    "/v1/settings", json={"limits": [limit]}, headers=tenant.headers
                )
                assert put.status_code == 200
                key = await create_key(http, tenant)
                assert await _chat(http, key["secret"], 5) == 200  # 1 of 2: 50 %
                failed: dict[str, Any] = {}

                async def first_attempt_failed() -> None:
                    for _ in range(300):
                        listed = await _alerts(http, tenant)
                        # attempts counts an attempt as it starts; last_error, as it ends
                        if listed and listed[0]["email"]["last_error"]:
                            failed.update(listed[0]["email"])
                            return
                        await asyncio.sleep(0.05)

                await first_attempt_failed()
                assert failed["delivered_at"] is None
                assert failed["last_error"]  # e.g. SMTPConnectError: connection refused
                smtp.start()
                await _wait_for(lambda: len(smtp.inbox.messages) >= 1, seconds=25)
                listed = []
                for _ in range(100):  # the outcome is stored right after the server answers
                    listed = await _alerts(http, tenant)
                    if listed[0]["email"]["delivered_at"] is not None:
                        break
                    await asyncio.sleep(0.05)
        assert len(smtp.inbox.messages) == 1
        email = listed[0]["email"]
        assert email["delivered_at"] is not None
        assert email["attempts"] >= 2
        assert email["last_error"] is None
        subject = str(smtp.inbox.messages[0].message["Subject"])
        assert subject == "Tollgate: tenant Acme reached 50 % of its daily request limit"

    async def test_the_sweep_resends_until_delivered_and_never_again(
        self, settings: Settings, engine: AsyncEngine, smtp: SmtpServer
    ):
        configured = smtp.settings(settings)
        async with app_client(configured) as http:
            tenant = await create_tenant(http)
            await _set_emails(http, tenant, ["ops@acme.example"])
        now = utcnow()
        due = Alert(
            tenant_id=uuid.UUID(tenant.id), scope="tenant", owner_id=uuid.UUID(tenant.id),
            metric="requests", period="day", period_tag="d20261207", threshold=80, max=10,
            used=8, created_at=now - timedelta(minutes=5), attempts=0,
            delivered_at=now,  # the webhook went: only the email is due
            email_recipients=["ops@acme.example"], email_attempts=4,
        )  # fmt: skip
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            session.add(due)
        mailer = mailer_from_settings(configured)
        async with httpx.AsyncClient() as client:
            notifier = AlertNotifier(sessionmaker, client, SecretBox(SECRET_KEY), mailer=mailer)
            assert await notifier.resend_undelivered() == 1  # the server is down
            smtp.start()
            assert await notifier.resend_undelivered() == 1
            assert await notifier.resend_undelivered() == 0  # delivered: not mailed again
            restarted = AlertNotifier(sessionmaker, client, SecretBox(SECRET_KEY), mailer=mailer)
            assert await restarted.resend_undelivered() == 0
        assert len(smtp.inbox.messages) == 1
        async with sessionmaker() as session:
            stored = await session.get(Alert, due.id)
            assert stored is not None
            assert stored.email_attempts == 6
            assert stored.email_delivered_at is not None
            assert stored.email_last_error is None
            assert stored.attempts == 0  # the webhook was not sent again

    async def test_each_tenants_recipients_get_only_its_alerts(
        self, gateway_settings: Settings, upstream: FakeUpstream, smtp: SmtpServer
    ):
        smtp.start()
        upstream.mode, upstream.words = "generate", 5
        limit = {"metric": "requests", "period": "day", "max": 2}
        with serve_in_thread(create_app(smtp.settings(gateway_settings))) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                alpha = await create_tenant(http, "alpha")
                beta = await create_tenant(http, "beta")
                await _set_emails(http, alpha, ["a@alpha.example"])
                await _set_emails(http, beta, ["b@beta.example"])
                for tenant in (alpha, beta):
                    put = await http.put(
                        "/v1/settings", json={"limits": [limit]}, headers=tenant.headers
                    )
                    assert put.status_code == 200
                key = await create_key(http, alpha)
                assert await _chat(http, key["secret"], 5) == 200
                await _wait_for(lambda: len(smtp.inbox.messages) >= 1)
                await asyncio.sleep(0.5)
                assert await _alerts(http, beta) == []
                assert len(await _alerts(http, alpha)) == 1
        assert len(smtp.inbox.messages) == 1
        received = smtp.inbox.messages[0]
        assert received.rcpt_tos == ["a@alpha.example"]
        assert "beta" not in received.message.as_string()
        assert "alpha" in received.message.get_content()


class TestAlertEmailSettings:
    async def test_a_bad_address_is_refused_naming_it(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        for emails, param in (
            (["ops@acme.example", "not-an-address"], "alerts.emails[1]"),
            (["Ops <ops@acme.example>"], "alerts.emails[0]"),
            (["ops@acme.example\r\nBcc: x@evil.example"], "alerts.emails[0]"),
        ):
            response = await client.put(
                "/v1/settings", json={"alerts": {"emails": emails}}, headers=tenant.headers
            )
            assert response.status_code == 400, emails
            error = response.json()["error"]
            assert error["param"] == param
            assert repr(emails[-1] if param.endswith("[1]") else emails[0]) in error["message"]
        too_many = [f"user{i}@acme.example" for i in range(21)]
        response = await client.put(
            "/v1/settings", json={"alerts": {"emails": too_many}}, headers=tenant.headers
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "alerts.emails"
        settings = (await client.get("/v1/settings", headers=tenant.headers)).json()
        assert settings["alerts"]["emails"] == []

    async def test_webhook_url_and_emails_change_independently(self, settings: Settings):
        hook = "http://127.0.0.1:9/hook"
        loopback = settings.model_copy(update={"allow_private_webhooks": True})
        async with app_client(loopback) as client:
            tenant = await create_tenant(client)
            await _set_emails(client, tenant, ["ops@acme.example"])
            put = await client.put(
                "/v1/settings", json={"alerts": {"webhook_url": hook}}, headers=tenant.headers
            )
            assert put.status_code == 200, put.text
            assert put.json()["alerts"]["emails"] == ["ops@acme.example"]
            assert put.json()["alerts"]["webhook_url"] == hook
            twice = {"alerts": {"emails": ["ops@acme.example", "OPS@acme.example"]}}
            put = await client.put("/v1/settings", json=twice, headers=tenant.headers)
            assert put.json()["alerts"] == {
                "webhook_url": hook, "emails": ["ops@acme.example"], "signing_secret_set": False
            }  # fmt: skip
            cleared = await client.put(
                "/v1/settings", json={"alerts": None}, headers=tenant.headers
            )
            assert cleared.json()["alerts"]["emails"] == []
            assert cleared.json()["alerts"]["webhook_url"] is None
