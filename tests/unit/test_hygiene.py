"""The secrets hygiene check itself (tests/hygiene.py) finds what it is meant to find."""

from __future__ import annotations

import logging

from api.auth.secrets import display_parts, generate_secret
from tests import hygiene


def _found_by(action: object) -> list[str]:
    before = list(hygiene.found)
    try:
        action()  # type: ignore[operator]
        return hygiene.found[len(before) :]
    finally:
        hygiene.found[:] = before  # what this test planted is not a leak of the suite's


def test_a_whole_key_secret_in_a_log_line_is_found():
    secret = generate_secret(test=False)
    found = _found_by(lambda: logging.getLogger("tollgate").error("bad key %s", secret))
    assert len(found) == 1
    assert found[0].startswith("log tollgate: qlk_live_")


def test_a_secret_in_a_stored_row_is_found_and_its_display_parts_are_not():
    secret = generate_secret(test=True)
    prefix, last_four = display_parts(secret)
    assert _found_by(lambda: hygiene.scan_rows("api_keys", [(prefix, last_four)])) == []
    found = _found_by(lambda: hygiene.scan_rows("thread_messages", [("hi", secret)]))
    assert [line.split(":")[0] for line in found] == ["table thread_messages"]


def test_the_configured_provider_and_stripe_secrets_are_found():
    for literal in hygiene.LITERALS:
        assert len(_found_by(lambda value=literal: hygiene.scan(f"x {value} y", "here"))) == 1
