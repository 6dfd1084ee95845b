"""The built-in detectors of the secret shield: provider keys, cards, emails, JWTs, phones.

Each preset is a regular expression (for the `regex` package) and, where a shape alone is not
enough, a check of the candidate (`luhn` for cards, digit counts and trunk prefixes for
phones). The expressions are anchored on both sides (no word character of the same token just
before or after), so a key inside a longer token, or a run of base64, is not cut in half; and
every one of them is linear: no nested quantifiers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import regex

# A preset (or a tenant rule) with a group named `secret` masks that group only, not the label
# around it.
SECRET_GROUP = "secret"
# Characters that make up tokens such as keys: a match must not be preceded or followed by one.
_TOKEN = r"A-Za-z0-9_\-"


def luhn(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812) over a string of decimal digits."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Issuer prefixes and the lengths they issue: a Luhn-valid number without one is left alone
# (one random number in ten passes Luhn; far fewer also start like a card of that length).
_CARD_BRANDS: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = (
    (("4",), (13, 16, 19)),  # Visa
    (tuple(str(n) for n in range(51, 56)), (16,)),  # Mastercard
    (tuple(str(n) for n in range(2221, 2721)), (16,)),  # Mastercard 2-series
    (("34", "37"), (15,)),  # American Express
    (("6011", "65", *(str(n) for n in range(644, 650))), (16, 19)),  # Discover
    (tuple(str(n) for n in range(3528, 3590)), (16, 17, 18, 19)),  # JCB
    (("36", "38", "39", *(str(n) for n in range(300, 306))), (14, 16, 19)),  # Diners Club
    (("62",), (16, 17, 18, 19)),  # UnionPay
)


def card_number(candidate: str) -> bool:
    """Digits (spaces or dashes between them allowed) of a known issuer's length, Luhn-valid."""
    digits = candidate.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 13 <= len(digits) <= 19 or not luhn(digits):
        return False
    return any(
        len(digits) in lengths and digits.startswith(prefixes) for prefixes, lengths in _CARD_BRANDS
    )


_NANP = regex.compile(r"\(?[2-9]\d\d\)?[ .\-]?[2-9]\d\d[ .\-]\d{4}")


def phone_number(candidate: str) -> bool:
    """An international number (`+`, 8 to 15 digits) or a national one with separators:
    10 or 11 digits that start with a trunk prefix `0` or have the North American shape."""
    digits = "".join(char for char in candidate if char.isdigit())
    if candidate.startswith("+"):
        return 8 <= len(digits) <= 15 and candidate.count("(") == candidate.count(")")
    if not 10 <= len(digits) <= 11:
        return False
    return digits.startswith("0") or _NANP.fullmatch(candidate) is not None


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    pattern: str
    check: Callable[[str], bool] | None = None
    description: str = ""
    # Substrings one of which every match contains: text without any is not searched at all.
    hints: tuple[str, ...] = ()


PRESETS: tuple[Preset, ...] = (
    # Anthropic before OpenAI: `sk-ant-…` is theirs, and the first preset wins a tie.
    Preset(
        "anthropic_key",
        rf"(?<![{_TOKEN}])sk-ant-[A-Za-z0-9_\-]{{20,}}(?![{_TOKEN}])",
        description="Anthropic API keys (sk-ant-…)",
        hints=("sk-ant-",),
    ),
    Preset(
        "openai_key",
        rf"(?<![{_TOKEN}])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{{20,}}(?![{_TOKEN}])",
        description="OpenAI API keys (sk-…, sk-proj-…)",
        hints=("sk-",),
    ),
    Preset(
        "google_api_key",
        rf"(?<![{_TOKEN}])AIza[0-9A-Za-z_\-]{{35}}(?![{_TOKEN}])",
        description="Google API keys (AIza…)",
        hints=("AIza",),
    ),
    Preset(
        "aws_access_key_id",
        r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        description="AWS access key ids (AKIA…, ASIA…)",
        hints=("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    Preset(
        # 40 characters of base64 are only a secret in context: after a label that names it,
        # or right after an access key id (as credential files and CSV exports write them).
        "aws_secret_access_key",
        r"(?:(?i:aws[_\- ]?secret(?:[_\- ]?access)?[_\- ]?key|secret[_\- ]?access[_\- ]?key)"
        r"[\"']?\s{0,3}[:=]\s{0,3}[\"']?|(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}[\s,;:|\"']{1,5})"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        description="AWS secret access keys, after a label or an access key id",
        hints=("secret", "SECRET", "Secret", "AKIA", "ASIA"),
    ),
    Preset(
        "jwt",
        rf"(?<![{_TOKEN}])eyJ[A-Za-z0-9_\-]{{5,}}\.eyJ[A-Za-z0-9_\-]{{5,}}\.[A-Za-z0-9_\-]*"
        rf"(?![{_TOKEN}.])",
        description="JSON Web Tokens (eyJ….eyJ….…)",
        hints=("eyJ",),
    ),
    Preset(
        "credit_card",
        r"(?<![\d\-])\d(?:[ \-]?\d){12,18}(?![\d])",
        check=card_number,
        description="card numbers of known issuers that pass the Luhn check",
    ),
    Preset(
        "email",
        r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}"
        r"(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])",
        description="email addresses",
        hints=("@",),
    ),
    Preset(
        "phone",
        r"(?<![\w+.\-])(?:\+[1-9][\d ().\-]{6,22}\d"
        r"|(?:\(\d{2,5}\)[ .\-]?|\d{2,5}[ .\-])\d{2,8}(?:[ .\-]\d{2,4}){0,3})"
        r"(?![\w]|[.\-]\d)",
        check=phone_number,
        description="phone numbers: E.164 (+…) and national formats with separators",
    ),
)

PRESET_NAMES: tuple[str, ...] = tuple(preset.name for preset in PRESETS)
BY_NAME: dict[str, Preset] = {preset.name: preset for preset in PRESETS}


@functools.cache
def compiled(name: str) -> regex.Pattern[str]:
    return regex.compile(BY_NAME[name].pattern)
