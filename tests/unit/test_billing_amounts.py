"""Billing arithmetic: integer cents, rounded up once per line; periods that have ended."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from api.billing.amounts import line_cents, parse_period, previous_period
from api.errors import InvalidRequest


class TestLineCents:
    @pytest.mark.parametrize(
        ("spend", "markup", "cents"),
        [
            (0, 0, 0),
            (1, 0, 1),  # any spend is at least a cent
            (10_000, 0, 1),
            (10_001, 0, 2),
            (1_000_000, 0, 100),
            (1_000_000, 2_500, 125),
            (999_999, 10_000, 200),
            (123_456_789, 1_234, 13_870),
        ],
    )
    def test_known_values(self, spend: int, markup: int, cents: int):
        assert line_cents(spend, markup) == cents

    def test_matches_exact_decimal_arithmetic(self):
        rng = random.Random(7)
        for _ in range(5_000):
            spend, markup = rng.randrange(0, 10**13), rng.randrange(0, 100_001)
            exact = Decimal(spend) * (10_000 + markup) / 10_000 / 10_000
            assert line_cents(spend, markup) == math.ceil(exact)

    def test_no_float_rounding_at_large_amounts(self):
        spend = 9_007_199_254_740_993  # beyond a float's exact integers
        assert line_cents(spend, 1) == -(-spend * 10_001 // 10**8)


class TestPeriods:
    NOW = datetime(2026, 11, 22, 3, tzinfo=UTC)

    def test_a_past_month(self):
        assert parse_period("2026-10", self.NOW) == (
            datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
        )  # fmt: skip
        assert parse_period("2025-12", self.NOW)[1] == datetime(2026, 1, 1, tzinfo=UTC)

    @pytest.mark.parametrize("period", ["2026-11", "2026-12", "2027-01"])
    def test_months_not_over_are_refused(self, period: str):
        with pytest.raises(InvalidRequest, match="not ended"):
            parse_period(period, self.NOW)

    @pytest.mark.parametrize("period", ["2026-00", "2026-13", "2026-1", "202610", "x", ""])
    def test_malformed(self, period: str):
        with pytest.raises(InvalidRequest) as caught:
            parse_period(period, self.NOW)
        assert caught.value.param == "period"

    def test_previous_period(self):
        assert previous_period(self.NOW) == "2026-10"
        assert previous_period(datetime(2027, 1, 1, 0, 5, tzinfo=UTC)) == "2026-12"
