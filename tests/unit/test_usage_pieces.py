"""`rollups.pieces`: a time range cut into log edges, whole hours and whole days (properties
checked over many seeded random ranges, plus hand-written cases)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.usage.rollups import Piece, pieces

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # where "all time" starts (rollups._EPOCH)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _whole_hour(moment: datetime) -> bool:
    utc = moment.astimezone(UTC)
    return utc == utc.replace(minute=0, second=0, microsecond=0)


def _whole_day(moment: datetime) -> bool:
    return _whole_hour(moment) and moment.astimezone(UTC).hour == 0


def _contains_whole(start: datetime, end: datetime | None, step: timedelta) -> bool:
    """Whether [start, end) contains a whole UTC hour (step HOUR) or day (step DAY)."""
    utc = start.astimezone(UTC)
    floor = utc.replace(minute=0, second=0, microsecond=0)
    if step == DAY:
        floor = floor.replace(hour=0)
    first = floor if floor == utc else floor + step
    return end is None or first + step <= end


def check(start: datetime | None, end: datetime | None) -> list[Piece]:
    """Every property a cut must have; returns the pieces for more specific checks."""
    out = pieces(start, end)
    begin = EPOCH if start is None else start
    if end is not None and begin == end:
        # An empty range covers nothing. `summed` needs a piece to select from, so it gets one
        # empty log piece (which selects no rows) rather than none.
        assert out in ([], [Piece("log", begin, end)])
        return out
    assert out, (start, end)
    assert all(piece.source in ("log", "h", "d") for piece in out)
    # Contiguous, in order, exactly [start, end): open only at the end when open-ended.
    assert out[0].start == begin
    for before, after in itertools.pairwise(out):
        assert before.end is not None
        assert before.end == after.start
    assert out[-1].end == end
    # No piece is empty.
    for piece in out:
        assert piece.end is None or piece.start < piece.end, piece
    # Rollup pieces are whole UTC hours / days; only the last piece can be open.
    for piece in out:
        if piece.source == "h":
            assert piece.end is not None
            assert _whole_hour(piece.start), piece
            assert _whole_hour(piece.end), piece
            # Whole days come from daily rows: an hourly piece holds no whole day.
            assert not _contains_whole(piece.start, piece.end, DAY), piece
        if piece.source == "d":
            assert _whole_day(piece.start), piece
            assert piece.end is None or _whole_day(piece.end), piece
    # The log is read only at the ragged edges: at most two pieces, first and last, and
    # never a whole UTC hour (that comes from the rollups).
    logs = [piece for piece in out if piece.source == "log"]
    assert len(logs) <= 2, out
    for piece in logs:
        assert piece.end is not None, piece
        assert piece in (out[0], out[-1]), out
        assert not _contains_whole(piece.start, piece.end, HOUR), piece
    if _contains_whole(begin, end, HOUR):
        # The range holds a whole hour: each edge is shorter than one hour.
        for piece in logs:
            assert piece.end is not None
            assert piece.end - piece.start < HOUR, piece
    else:
        # No whole hour inside: the whole range is one log piece, under two hours.
        assert out == [Piece("log", begin, end)]
        assert end is not None
        assert end - begin < 2 * HOUR
    assert sum(piece.source == "d" for piece in out) <= 1
    assert sum(piece.source == "h" for piece in out) <= 2
    return out


def _random_moment(rng: random.Random) -> datetime:
    base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(400 * 86400))
    moment = base.replace(microsecond=rng.randrange(1_000_000))
    shape = rng.random()
    if shape < 0.15:
        return moment.replace(minute=0, second=0, microsecond=0)  # a whole hour
    if shape < 0.25:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)  # a whole day
    if shape < 0.3:
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)  # a month
    if shape < 0.35:  # just before a whole hour
        return moment.replace(minute=0, second=0, microsecond=0) - timedelta(microseconds=1)
    return moment


def _aligned_after(rng: random.Random, start: datetime) -> datetime:
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    shape = rng.random()
    if shape < 0.4:
        return day + timedelta(days=rng.randrange(1, 41))
    if shape < 0.8:
        return start.replace(minute=0, second=0, microsecond=0) + rng.randrange(1, 100) * HOUR
    month = day.replace(day=1)
    return (month + timedelta(days=32)).replace(day=1)  # the next month


def _random_length(rng: random.Random) -> timedelta:
    shape = rng.random()
    if shape < 0.05:
        return timedelta(0)
    if shape < 0.3:  # short: the cases around one and two hours
        return timedelta(microseconds=rng.randrange(3 * 3600 * 10**6))
    if shape < 0.4:
        return timedelta(hours=rng.randrange(1, 60))  # whole hours
    if shape < 0.5:
        return timedelta(days=rng.randrange(1, 41))  # whole days
    return timedelta(microseconds=rng.randrange(40 * 86400 * 10**6))


class TestProperties:
    @pytest.mark.parametrize("seed", range(4))
    def test_random_ranges(self, seed: int):
        rng = random.Random(seed)
        for _ in range(5000):
            start = _random_moment(rng)
            shape = rng.random()
            if shape < 0.1:
                check(start, None)  # open-ended
            elif shape < 0.15:
                check(start, start)
            elif shape < 0.2:  # end on a whole hour, day or month too
                check(start, _aligned_after(rng, start))
            else:
                check(start, start + _random_length(rng))

    def test_random_ranges_in_other_time_zones(self):
        rng = random.Random(99)
        for _ in range(2000):
            zone = timezone(timedelta(minutes=rng.choice([-570, -300, 0, 330, 345, 600])))
            start = _random_moment(rng).astimezone(zone)
            check(start, start + _random_length(rng))
            check(start, None)

    def test_all_time(self):
        assert check(None, None) == [Piece("d", EPOCH, None)]
        rng = random.Random(7)
        for _ in range(500):
            end = _random_moment(rng)
            out = check(None, end)
            assert out[0] == Piece("d", EPOCH, out[0].end)


class TestExamples:
    def test_ragged_range_over_days(self):
        start, end = at("2026-03-01T10:15:30.500000"), at("2026-03-04T02:45:00")
        assert check(start, end) == [
            Piece("log", start, at("2026-03-01T11:00")),
            Piece("h", at("2026-03-01T11:00"), at("2026-03-02T00:00")),
            Piece("d", at("2026-03-02T00:00"), at("2026-03-04T00:00")),
            Piece("h", at("2026-03-04T00:00"), at("2026-03-04T02:00")),
            Piece("log", at("2026-03-04T02:00"), end),
        ]

    def test_whole_days(self):
        start, end = at("2026-02-27T00:00"), at("2026-03-02T00:00")
        assert check(start, end) == [Piece("d", start, end)]

    def test_whole_hours_across_midnight_and_a_month(self):
        start, end = at("2026-02-28T23:00"), at("2026-03-01T01:00")
        assert check(start, end) == [
            Piece("h", start, at("2026-03-01T00:00")),
            Piece("h", at("2026-03-01T00:00"), end),
        ]

    def test_within_one_day(self):
        start, end = at("2026-03-01T10:15"), at("2026-03-01T14:30")
        assert check(start, end) == [
            Piece("log", start, at("2026-03-01T11:00")),
            Piece("h", at("2026-03-01T11:00"), at("2026-03-01T14:00")),
            Piece("log", at("2026-03-01T14:00"), end),
        ]

    def test_within_one_hour(self):
        start, end = at("2026-03-01T10:15"), at("2026-03-01T10:45")
        assert check(start, end) == [Piece("log", start, end)]

    def test_exactly_one_hour(self):
        start = at("2026-03-01T10:00")
        assert check(start, start + HOUR) == [Piece("h", start, start + HOUR)]

    def test_a_microsecond_short_of_one_hour(self):
        start = at("2026-03-01T10:00:00.000001")
        assert check(start, start + HOUR) == [Piece("log", start, start + HOUR)]

    def test_open_ended(self):
        start = at("2026-03-01T10:15")
        assert check(start, None) == [
            Piece("log", start, at("2026-03-01T11:00")),
            Piece("h", at("2026-03-01T11:00"), at("2026-03-02T00:00")),
            Piece("d", at("2026-03-02T00:00"), None),
        ]

    def test_open_ended_from_a_whole_day(self):
        start = at("2026-03-01T00:00")
        assert check(start, None) == [Piece("d", start, None)]

    def test_open_ended_from_a_whole_hour(self):
        start = at("2026-03-01T23:00")
        assert check(start, None) == [
            Piece("h", start, at("2026-03-02T00:00")),
            Piece("d", at("2026-03-02T00:00"), None),
        ]

    def test_other_time_zone_is_cut_on_utc_hours(self):
        india = timezone(timedelta(hours=5, minutes=30))
        start = datetime(2026, 3, 1, 5, 30, tzinfo=india)  # 2026-03-01T00:00Z
        end = datetime(2026, 3, 2, 7, 0, tzinfo=india)  # 2026-03-02T01:30Z
        assert check(start, end) == [
            Piece("d", start, at("2026-03-02T00:00")),
            Piece("h", at("2026-03-02T00:00"), at("2026-03-02T01:00")),
            Piece("log", at("2026-03-02T01:00"), end),
        ]
