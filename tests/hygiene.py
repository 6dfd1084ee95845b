"""Secrets hygiene across the whole suite: every log line the suite's code emitted, and every
row every test left in the database (read just before the test's tables are emptied), are
searched for the secrets the suite uses: Tollgate key secrets (`qlk_live_…`, `qlk_test_…`,
whole), webhook signing secrets (`whsec_…`), Stripe secret keys, and the provider keys the
tests configure. A secret found anywhere fails the session, naming where.

Stored secrets are sealed (`api.kit.crypto.SecretBox`) and key secrets only hashed, so a
match is a leak: a log line that printed a header or a body, a column that kept a secret in
the clear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import pytest

# The provider and Stripe secrets the tests configure (tests/conftest.py, tests/factories,
# tests/integration): literal values, searched as they are.
LITERALS = (
    "sk-operator-openai", "sk-operator-deepseek", "sk-ant-operator", "AIza-operator",
    "sk-tenant-own-key-1234", "sk-ant-tenant-own", "sk_test_tollgatebilling0001",
    "whsec_tollgatebillingsecret",
)  # fmt: skip
# Secrets Tollgate mints: a key secret is its prefix and 43 characters (the display prefix
# kept in the clear is far shorter); a signing secret, "whsec_" and 43.
MINTED = re.compile(r"qlk_(?:live|test)_[A-Za-z0-9_-]{40,}|whsec_[A-Za-z0-9_-]{40,}")
_LITERAL = re.compile("|".join(re.escape(value) for value in LITERALS))

found: list[str] = []


def scan(text: str, where: str) -> None:
    for pattern in (MINTED, _LITERAL):
        for match in pattern.finditer(text):
            secret = match.group(0)
            found.append(f"{where}: {secret[:14]}… in {text[:160]!r}")


class _Collector(logging.Handler):
    """Every record that reaches the root logger's handlers, at the levels configured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: its raw parts
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        scan(text, f"log {record.name}")


def scan_rows(table: str, rows: Iterable[tuple[object, ...]]) -> None:
    for row in rows:
        scan(repr(row), f"table {table}")


@pytest.fixture(scope="session", autouse=True)
def secrets_never_logged_or_stored() -> object:
    collector = _Collector(level=logging.NOTSET)
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield
    finally:
        root.removeHandler(collector)
    if found:
        listed = "\n".join(sorted(set(found))[:50])
        pytest.fail(f"secrets were logged or stored in the clear ({len(found)}):\n{listed}")
