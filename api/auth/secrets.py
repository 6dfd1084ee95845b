"""API key secrets: generation, peppered hashing, display parts (SPEC §4)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

LIVE_PREFIX = "qlk_live_"
TEST_PREFIX = "qlk_test_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_BYTES = 32
# 62**43 > 256**32, so 43 base62 digits hold any 32-byte value.
_BODY_LENGTH = 43
_DISPLAY_PREFIX_LENGTH = len(LIVE_PREFIX) + 4


def derive_pepper(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"tollgate/api-key-pepper/v1", hashlib.sha256).digest()


def _base62(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits)).rjust(_BODY_LENGTH, "0")


def generate_secret(*, test: bool) -> str:
    prefix = TEST_PREFIX if test else LIVE_PREFIX
    return prefix + _base62(secrets.token_bytes(_SECRET_BYTES))


def looks_like_secret(value: str) -> bool:
    return value.startswith((LIVE_PREFIX, TEST_PREFIX)) and 0 < len(value) <= 256


def hash_secret(pepper: bytes, secret: str) -> str:
    return hmac.digest(pepper, secret.encode(), "sha256").hex()  # one call into OpenSSL


def display_parts(secret: str) -> tuple[str, str]:
    """(prefix, last four): enough for a person to recognise a key, useless to an attacker."""
    return secret[:_DISPLAY_PREFIX_LENGTH], secret[-4:]
