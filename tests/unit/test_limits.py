from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from api.auth import limits
from api.auth.schemas import LimitIn
from api.errors import InvalidRequest
from api.kit.money import micros_to_usd, usd_to_micros


class TestCombine:
    def test_shorthand_becomes_monthly_spend_limit(self):
        combined = limits.combine([limits.Limit("requests", "day", 10)], 5_000_000)
        assert limits.Limit("spend_usd", "month", 5_000_000) in combined
        assert limits.monthly_spend(combined) == 5_000_000

    def test_duplicate_pair_is_refused_with_its_position(self):
        pair = [limits.Limit("tokens", "day", 1), limits.Limit("tokens", "day", 2)]
        with pytest.raises(InvalidRequest) as caught:
            limits.combine(pair, None)
        assert caught.value.param == "limits[1]"

    def test_shorthand_conflicts_with_explicit_monthly_spend(self):
        with pytest.raises(InvalidRequest) as caught:
            limits.combine([limits.Limit("spend_usd", "month", 1)], 2)
        assert caught.value.param == "max_spend_usd"

    def test_same_metric_other_period_is_fine(self):
        combined = limits.combine([limits.Limit("spend_usd", "day", 1)], 2)
        assert len(combined) == 2


class TestPeriods:
    moment = datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)

    def test_day_and_month_are_calendar_utc(self):
        assert limits.period_start("day", self.moment) == datetime(2026, 3, 31, tzinfo=UTC)
        assert limits.period_start("month", self.moment) == datetime(2026, 3, 1, tzinfo=UTC)
        assert limits.period_start("total", self.moment) is None

    def test_other_timezones_are_normalised(self):
        from datetime import timedelta, timezone

        tokyo = self.moment.astimezone(timezone(timedelta(hours=9)))  # already April 1st there
        assert limits.period_start("month", tokyo) == datetime(2026, 3, 1, tzinfo=UTC)
        assert limits.period_start("day", tokyo) == datetime(2026, 3, 31, tzinfo=UTC)


class TestLimitIn:
    def test_spend_is_stored_in_micros_exactly(self):
        assert (
            LimitIn(metric="spend_usd", period="month", max=Decimal("0.1")).to_limit().max
            == 100_000
        )
        assert usd_to_micros(0.1) == 100_000
        assert usd_to_micros(Decimal("0.0000005")) == 1  # half a micro rounds up, once
        assert micros_to_usd(2_000_001) == 2.000001

    def test_counts_must_be_whole(self):
        with pytest.raises(ValidationError):
            LimitIn(metric="requests", period="day", max=Decimal("1.5"))
        assert LimitIn(metric="tokens", period="day", max=Decimal(7)).to_limit().max == 7

    def test_negative_is_refused(self):
        with pytest.raises(ValidationError):
            LimitIn(metric="spend_usd", period="day", max=Decimal(-1))
