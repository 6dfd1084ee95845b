"""Check the signature on what Tollgate POSTs to you: tool calls, budget alerts, billing
notices and job completions.

    X-Tollgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

`secret` is the tool's `signing_secret` for tool calls, and the tenant's webhook secret
(`client.settings.create_webhook_secret()`) for the rest. Verify the raw body, as received,
before parsing it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from tollgate._errors import WebhookVerificationError

SIGNATURE_HEADER = "X-Tollgate-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes | str, *, timestamp: int | None = None) -> str:
    """The header value Tollgate would send for `body` (for tests of your receiver)."""
    t = int(time.time()) if timestamp is None else timestamp
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(
    secret: str,
    header: str | None,
    body: bytes | str,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    *,
    now: float | None = None,
) -> None:
    """Raise `WebhookVerificationError` unless `header` signs `body` with `secret` and its
    timestamp is within `tolerance` seconds of now (300 by default)."""
    if not header:
        raise WebhookVerificationError(f"No {SIGNATURE_HEADER} header.")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookVerificationError(
                    "The signature's timestamp is not a number."
                ) from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookVerificationError("The signature header needs t= and v1=.")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"The signature's timestamp is more than {tolerance:g} s from now."
        )
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    if not any(hmac.compare_digest(expected.hexdigest(), given) for given in signatures):
        raise WebhookVerificationError("The signature does not match the body.")
