"""Money is integer micro-USD; floats appear only in `*_usd` display fields."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

MICROS_PER_USD = 1_000_000


def usd_to_micros(usd: float | int | Decimal) -> int:
    value = Decimal(str(usd)) * MICROS_PER_USD
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micros_to_usd(micros: int) -> float:
    return float(Decimal(micros) / MICROS_PER_USD)
