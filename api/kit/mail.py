"""Outgoing email through the operator's SMTP server (`TOLLGATE_SMTP_*`), with aiosmtplib.

One connection per message: alerts are rare, and a fresh connection never finds a server's
idle timeout. Errors are raised to the caller, which records them and retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

TlsMode = Literal["starttls", "tls", "none"]


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: TlsMode
    sender: str
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = 30.0


class Mailer:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    @property
    def sender(self) -> str:
        return self.config.sender

    async def send(self, message: EmailMessage) -> list[str]:
        """Deliver one message to the addresses in its To header; returns those the server
        refused (the others took it). Raises when none did or the server could not be used."""
        config = self.config
        refused, _ = await aiosmtplib.send(
            message,
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            use_tls=config.tls == "tls",
            start_tls=config.tls == "starttls",  # "none": never upgrade, even if offered
            timeout=config.timeout_seconds,
        )
        return sorted(refused)


def error_text(exc: BaseException) -> str:
    """What went wrong, short enough to store (never the credentials: aiosmtplib omits them)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {detail}"[:200] if detail else type(exc).__name__
