"""Email addresses as Tollgate takes them: a plain ASCII `local@domain`, the domain with a dot.

No display names, comments, quoted local parts or IP literals: these are alert recipients, and
an address an SMTP server could read two ways is refused rather than guessed at. International
domains are given in their punycode form (`xn--…`).
"""

from __future__ import annotations

import re

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})")


def check_address(value: str) -> str:
    """The address, stripped; raises ValueError naming it when it is not one."""
    address = value.strip()
    local, at, domain = address.rpartition("@")
    labels = domain.split(".")
    ok = (
        bool(at)
        and len(address) <= 254
        and 0 < len(local) <= 64
        and _LOCAL.fullmatch(local) is not None
        and len(labels) >= 2
        and all(_LABEL.fullmatch(label) for label in labels)
        and _TLD.fullmatch(labels[-1]) is not None
    )
    if not ok:
        raise ValueError(f"{value!r} is not a valid email address")
    return address
