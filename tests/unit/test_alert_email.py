"""A budget alert as an email (no servers): subject, figures, headers; the address check; the
SMTP settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from api.alert.email import compose, mailer_from_settings, usd
from api.alert.models import Alert
from api.kit.email_address import check_address
from api.settings import Settings


def _alert(**fields: object) -> Alert:
    values: dict[str, object] = {
        "id": uuid.uuid4(), "tenant_id": uuid.uuid4(), "scope": "key", "owner_id": uuid.uuid4(),
        "metric": "spend_usd", "period": "month", "period_tag": "m202612", "threshold": 80,
        "max": 10_000_000, "used": 8_000_123, "created_at": datetime(2026, 12, 7, tzinfo=UTC),
    }  # fmt: skip
    values.update(fields)
    return Alert(**values)


def test_a_key_spend_alert_reads_with_its_figures():
    alert = _alert()
    message = compose(
        alert, owner_name="alice", tenant_name="Acme", recipients=["a@x.example", "b@x.example"],
        sender="Tollgate <alerts@tollgate.example>",
    )  # fmt: skip
    assert message["Subject"] == "Tollgate: key alice reached 80 % of its monthly spend limit"
    assert message["To"] == "a@x.example, b@x.example"
    assert message["Message-ID"] == f"<alert-{alert.id}@tollgate.example>"
    body = message.get_content()
    assert "Used:       $8.000123 of $10.00 (80.0 %)" in body
    assert f'Key "alice" (id {alert.owner_id})' in body
    assert "Period:     m202612" in body


def test_a_tenant_count_alert_and_a_name_with_a_line_break():
    alert = _alert(
        scope="tenant", metric="tokens", period="day", threshold=100, max=1000, used=1000
    )
    message = compose(
        alert, owner_name="Acme\r\nBcc: x@evil.example", tenant_name="Acme\r\nBcc: x@evil.example",
        recipients=["a@x.example"], sender="alerts@tollgate.example",
    )  # fmt: skip
    assert message["Subject"] == (
        "Tollgate: tenant Acme Bcc: x@evil.example reached 100 % of its daily token limit"
    )
    assert message["Bcc"] is None
    assert "Used:       1,000 tokens of 1,000 tokens (100.0 %)" in message.get_content()


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "$0.00"), (10_000_000, "$10.00"), (123, "$0.000123"), (1_234_567_890, "$1,234.56789")],
)
def test_usd(micros: int, text: str):
    assert usd(micros) == text


def test_addresses():
    assert check_address(" ops@acme.example ") == "ops@acme.example"
    for bad in ("ops", "ops@acme", "Ops <ops@acme.example>", "a@b.example\nBcc: c@d.example"):
        with pytest.raises(ValueError, match="not a valid email address"):
            check_address(bad)


def test_smtp_settings():
    assert mailer_from_settings(Settings()) is None
    with pytest.raises(ValidationError, match="smtp_from"):
        Settings(smtp_host="smtp.example.com")
    mailer = mailer_from_settings(
        Settings(smtp_host="smtp.example.com", smtp_from="alerts@example.com", smtp_tls="tls")
    )
    assert mailer is not None
    assert (mailer.config.port, mailer.config.tls, mailer.sender) == (
        587,
        "tls",
        "alerts@example.com",
    )
