"""Secrets Tollgate must read back (webhook signing secrets, later provider and Stripe keys),
encrypted at rest with a key derived from `TOLLGATE_SECRET_KEY` (Fernet: AES-128-CBC + HMAC)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        derived = hmac.new(secret_key.encode(), b"tollgate/secret-box/v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:  # sealed under another TOLLGATE_SECRET_KEY
            raise ValueError("a stored secret cannot be decrypted with this secret key") from exc
