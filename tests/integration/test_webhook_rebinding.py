"""DNS rebinding: a tenant's host that resolves to a public address when checked and to
127.0.0.1 when connected to is refused at connect time, and the loopback listener it points at
receives nothing. Connections go to the checked address under the host's name (Host, SNI).
What can be judged when a URL is saved is a 400 then."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from api.alert.models import Alert
from api.alert.service import AlertNotifier
from api.billing.service import TenantNotice, deliver_notice
from api.db import create_sessionmaker
from api.kit.crypto import SecretBox
from api.kit.time import utcnow
from api.kit.webhook_client import create_webhook_client
from api.kit.webhooks import check_url
from api.settings import Settings
from api.tool.runner import ToolRunner
from tests.conftest import SECRET_KEY, app_client
from tests.factories.tenants import TenantFixture, create_tenant

PUBLIC = "93.184.215.14"
CITY = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class Rebinding:
    """A resolver for a rebinding name: a public address first, loopback ever after."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked += 1
        return [PUBLIC] if self.asked == 1 else ["127.0.0.1"]


class Listener:
    """A loopback server counting connections; it answers every request with a tool result."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = next((int(v.split(b":")[1]) for v in lines if v.startswith(b"content-length")),
                          0)  # fmt: skip
            await reader.readexactly(length)
            self.heads.append(head)
            answer = b'{"content": "pong"}'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                         % (len(answer), answer))  # fmt: skip
            await writer.drain()
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serving(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[Listener]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


@contextlib.asynccontextmanager
async def _tenant_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, TenantFixture]]:
    """The API with private addresses allowed, so the rebinding names are saved unresolved."""
    allowed = settings.model_copy(update={"allow_private_webhooks": True})
    async with app_client(allowed) as http:
        yield http, await create_tenant(http)


class TestRebindingIsRefused:
    async def test_a_tool_webhook_rebound_to_loopback_is_refused(
        self, settings: Settings, engine: AsyncEngine
    ):
        rebinding = Rebinding()
        async with Listener().serving() as listener, _tenant_app(settings) as (http, tenant):
            url = f"http://hooks.rebind.test:{listener.port}/tools/lookup"
            await check_url(url, allow_private=False, param="webhook_url", resolve=rebinding)
            created = await http.post("/v1/tools", headers=tenant.headers, json={
                "name": "lookup", "input_schema": CITY, "webhook_url": url,
            })  # fmt: skip
            assert created.status_code == 201, created.text
            payload = {"tenant_id": tenant.id, "input": {"name": "Oslo"},
                       "tool_call_id": "call_1", "thread_id": "t", "key_id": "k"}  # fmt: skip
            async with create_webhook_client(allow_private=False, resolve=rebinding) as client:
                runner = ToolRunner(create_sessionmaker(engine), client, SecretBox(SECRET_KEY))
                result = await asyncio.wait_for(runner.call(created.json()["id"], payload), 10)
        assert result["is_error"] is True
        assert "private or loopback" in result["content"]
        assert result["attempts"] == 1  # a refusal is not retried
        assert rebinding.asked == 2
        assert listener.connections == 0

    async def test_an_alert_webhook_rebound_to_loopback_is_refused(
        self, settings: Settings, engine: AsyncEngine
    ):
        rebinding = Rebinding()
        async with Listener().serving() as listener, _tenant_app(settings) as (http, tenant):
            url = f"http://alerts.rebind.test:{listener.port}/hook"
            await check_url(url, allow_private=False, param="alerts.webhook_url",
                            resolve=rebinding)  # fmt: skip
            body = {"alerts": {"webhook_url": url}}
            assert (await http.put("/v1/settings", json=body, headers=tenant.headers)).is_success
            await http.post("/v1/settings/webhook-secret", headers=tenant.headers)
            tenant_id = uuid.UUID(tenant.id)
            alert = Alert(
                tenant_id=tenant_id, scope="tenant", owner_id=tenant_id, metric="requests",
                period="day", period_tag="d1", threshold=100, max=10, used=10,
                created_at=utcnow() - datetime.timedelta(minutes=5), attempts=1,
            )  # fmt: skip
            sessionmaker = create_sessionmaker(engine)
            async with sessionmaker() as session, session.begin():
                session.add(alert)
            async with create_webhook_client(allow_private=False, resolve=rebinding) as client:
                notifier = AlertNotifier(sessionmaker, client, SecretBox(SECRET_KEY))
                assert await notifier.resend_undelivered() == 1
                assert await notifier.resend_undelivered() == 1  # still due: tried again
        async with sessionmaker() as session:
            stored = await session.get(Alert, alert.id)
        assert stored is not None
        assert stored.delivered_at is None
        assert stored.attempts == 3
        assert "private or loopback" in (stored.last_error or "")
        assert listener.connections == 0

    async def test_a_billing_notice_to_loopback_is_not_sent(self):
        async with Listener().serving() as listener:
            notice = TenantNotice(url=f"http://127.0.0.1:{listener.port}/hook", secret="s",
                                  body=b"{}")  # fmt: skip
            assert await deliver_notice(notice, allow_private=False) is False
            assert listener.connections == 0
            assert await deliver_notice(notice, allow_private=True) is True  # the control
            assert listener.connections == 1


class TestSaveTimeChecks:
    async def test_an_out_of_range_port_is_a_400_naming_the_field(self, client: httpx.AsyncClient):
        tenant = await create_tenant(client)
        url = "https://example.com:99999/x"
        tool = await client.post("/v1/tools", headers=tenant.headers, json={
            "name": "lookup", "input_schema": CITY, "webhook_url": url,
        })  # fmt: skip
        assert tool.status_code == 400, tool.text
        assert tool.json()["error"]["param"] == "webhook_url"
        body = {"alerts": {"webhook_url": url}}
        alerts = await client.put("/v1/settings", json=body, headers=tenant.headers)
        assert alerts.status_code == 400, alerts.text
        assert alerts.json()["error"]["param"] == "alerts.webhook_url"


class TestPinnedConnection:
    async def test_the_checked_address_is_reached_under_the_hosts_name(self, tmp_path: Path):
        """TLS verifies a certificate for the name only (no IP), so SNI and the certificate
        check used the name while the socket went to the address the resolver answered."""
        server_tls, client_tls = _tls_for("hooks.pinned.test", tmp_path)
        names: list[str | None] = []

        def remember(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
            names.append(name)

        server_tls.sni_callback = remember

        async def loopback(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        async with (
            Listener().serving(server_tls) as listener,
            create_webhook_client(allow_private=True, resolve=loopback, verify=client_tls) as c,
        ):
            response = await c.post(f"https://hooks.pinned.test:{listener.port}/x", json={})
        assert response.json() == {"content": "pong"}
        assert names == ["hooks.pinned.test"]
        assert f"host: hooks.pinned.test:{listener.port}".encode() in listener.heads[0].lower()


def _tls_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `name`: the server's context and a client's trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert, private = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, private)
    return server, ssl.create_default_context(cafile=str(cert))
