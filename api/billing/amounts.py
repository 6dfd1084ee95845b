"""Billing arithmetic and periods (pure): integer cents from the ledger's micro-USD.

A line's amount is ceil(spend_micros * (10,000 + markup_bps) / 10,000 / 10,000): micro-USD
to cents is a factor of 10,000, the markup is in basis points, and the one rounding (up) happens
per line, on the exact integer ratio.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from api.errors import InvalidRequest

BPS = 10_000
MICROS_PER_CENT = 10_000
MAX_MARKUP_BPS = 100_000  # +1000 %

# Stripe's minimum charge per currency, in the currency's minor unit
# (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts). Only two-decimal
# currencies: the ledger's micro-USD map onto cents one to one. Tollgate converts no exchange
# rates: a tenant billing in another currency prices that in through `markup_bps`.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "nzd": 50, "chf": 50, "sgd": 50,
    "brl": 50, "inr": 50, "dkk": 250, "nok": 300, "sek": 300, "pln": 200, "hkd": 400,
    "mxn": 1000,
}  # fmt: skip

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def line_cents(spend_micros: int, markup_bps: int) -> int:
    """Cents for one line, rounded up once, in integers only."""
    if spend_micros <= 0:
        return 0
    numerator = spend_micros * (BPS + markup_bps)
    return -(-numerator // (BPS * MICROS_PER_CENT))


def parse_period(period: str, now: datetime, *, param: str = "period") -> tuple[datetime, datetime]:
    """The [start, end) of a closed calendar month "YYYY-MM" (UTC); a month not over yet is
    refused, since its spend is still growing."""
    match = _PERIOD.match(period)
    if match is None:
        raise InvalidRequest("period must be a month written YYYY-MM, e.g. 2026-10.", param=param)
    year, month = int(match.group(1)), int(match.group(2))
    if not 2000 <= year <= 9998:  # `datetime` has no year 0, and none of these is billable
        raise InvalidRequest(f"period {period}: the year is out of range.", param=param)
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    if end > now:
        raise InvalidRequest(
            f"period {period} has not ended yet: only past months can be billed.", param=param
        )
    return start, end


def previous_period(now: datetime) -> str:
    """The last month that has ended at `now`: what the month-end job bills."""
    now = now.astimezone(UTC)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"
