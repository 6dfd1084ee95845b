"""`rollups.pieces`: a time range covered by signed pieces (whole months, days and hours from
the rollups, ragged edges from the log). Properties over many seeded random ranges, plus
hand-written cases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from api.usage.rollups import Piece, pieces

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # where "all time" starts (rollups._EPOCH)
LATER = datetime(2100, 1, 1, tzinfo=UTC)  # a `now` after every range: none is open-ended


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _aligned(moment: datetime, span: str) -> bool:
    utc = moment.astimezone(UTC)
    whole_hour = utc == utc.replace(minute=0, second=0, microsecond=0)
    if span == "h":
        return whole_hour
    if span == "d":
        return whole_hour and utc.hour == 0
    return whole_hour and utc.hour == 0 and utc.day == 1


def _weight(out: list[Piece], moment: datetime) -> int:
    """How many times the pieces count an event at `moment` (signs included)."""
    return sum(
        piece.sign
        for piece in out
        if piece.start <= moment and (piece.end is None or moment < piece.end)
    )


def check(
    start: datetime | None, end: datetime | None, *, coarsest: str = "m", now: datetime = LATER
) -> list[Piece]:
    """Every property a cover must have; returns the pieces for more specific checks."""
    out = pieces(start, end, coarsest=coarsest, now=now)
    begin = EPOCH if start is None else start
    bounded = end is not None and end <= now
    if bounded and begin >= end:  # type: ignore[operator]
        assert out == [Piece("log", begin, end)]  # selects nothing
        return out
    # An event counts exactly once inside the range and not at all outside it: probe every
    # piece's edges, the range's edges, a microsecond either side, and random moments.
    probes = {begin - US, begin, begin + US}
    if bounded:
        probes |= {end - US, end, end + US}  # type: ignore[operator]
    for piece in out:
        for edge in (piece.start, piece.end):
            if edge is not None:
                probes |= {edge - US, edge, edge + US}
    horizon = (end if bounded else begin + timedelta(days=90)) - begin  # type: ignore[operator]
    rng = random.Random(hash((begin, end)))
    probes |= {begin + rng.random() * horizon for _ in range(20)}
    for moment in probes:
        inside = begin <= moment and (not bounded or moment < end)  # type: ignore[operator]
        assert _weight(out, moment) == int(inside), (start, end, moment, out)
    for piece in out:
        assert piece.sign in (1, -1)
        assert piece.end is None or piece.start < piece.end, piece
        if piece.source != "log":
            assert piece.source in ("h", "d", "m")
            assert _aligned(piece.start, piece.source), piece
            assert piece.end is None or _aligned(piece.end, piece.source), piece
        else:
            assert piece.end is not None, piece
            assert piece.end - piece.start < HOUR, piece
    if coarsest == "d":
        assert "m" not in {piece.source for piece in out}
    # The log is read only at the edges, and the cover stays small.
    assert sum(piece.source == "log" for piece in out) <= 2, out
    assert len(out) <= 16, out
    if not bounded:
        assert out[-1].end is None
    return out


def _random_moment(rng: random.Random) -> datetime:
    base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(400 * 86_400))
    shape = rng.random()
    if shape < 0.2:
        return base.replace(minute=0, second=0, microsecond=0)
    if shape < 0.3:
        return base.replace(hour=0, minute=0, second=0, microsecond=0)
    if shape < 0.4:
        return base.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if shape < 0.5:
        return base.replace(minute=0, second=0, microsecond=0) - US
    return base + timedelta(microseconds=rng.randrange(1_000_000))


@pytest.mark.parametrize("seed", range(6))
def test_random_ranges(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(1500):
        start = _random_moment(rng)
        length = rng.choice([0, 1, 59, 3600, 86_400, 40 * 86_400, 95 * 86_400])
        end = start + timedelta(seconds=rng.random() * length) if rng.random() < 0.8 else None
        if rng.random() < 0.1 and end is not None:
            end = start
        check(start, end, coarsest=rng.choice(["m", "d"]))


def test_other_time_zones_are_the_same_instants() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    start = datetime(2026, 3, 1, 3, 0, tzinfo=india)  # 2026-02-28 21:30 UTC
    out = check(start, datetime(2026, 3, 4, tzinfo=india))
    assert all(_aligned(p.start, p.source) for p in out if p.source != "log")


def test_all_time() -> None:
    assert check(None, None) == [Piece("m", EPOCH, None)]
    assert check(None, None, coarsest="d") == [Piece("d", EPOCH, None)]


def test_this_month_so_far_is_one_monthly_read() -> None:
    now = at("2026-11-22 06:12:00")
    assert check(at("2026-11-01 00:00"), now + timedelta(seconds=1), now=now) == [
        Piece("m", at("2026-11-01 00:00"), None)
    ]


def test_a_range_reaching_past_now_is_open_ended() -> None:
    now = at("2026-11-22 06:12:00")
    out = check(at("2026-11-20 00:00"), at("2026-12-31 00:00"), now=now)
    assert out == [
        Piece("d", at("2026-11-20 00:00"), at("2026-12-01 00:00")),
        Piece("m", at("2026-12-01 00:00"), None),  # empty yet, and nothing after it either
    ]


def test_a_ragged_thirty_days_reads_most_of_a_day_whole() -> None:
    start = at("2026-10-23 05:54:00")
    out = check(start, None, now=at("2026-11-22 06:00"), coarsest="m")
    assert out == [
        Piece("d", at("2026-10-23 00:00"), at("2026-10-24 00:00")),
        Piece("h", at("2026-10-23 00:00"), at("2026-10-23 05:00"), -1),
        Piece("h", at("2026-10-23 05:00"), at("2026-10-23 06:00"), -1),
        Piece("log", start, at("2026-10-23 06:00")),
        Piece("d", at("2026-10-24 00:00"), at("2026-11-01 00:00")),
        Piece("m", at("2026-11-01 00:00"), None),
    ]


def test_whole_days_and_months() -> None:
    assert check(at("2026-01-01 00:00"), at("2026-03-01 00:00")) == [
        Piece("m", at("2026-01-01 00:00"), at("2026-03-01 00:00"))
    ]
    assert check(at("2026-01-01 00:00"), at("2026-03-01 00:00"), coarsest="d") == [
        Piece("d", at("2026-01-01 00:00"), at("2026-03-01 00:00"))
    ]


def test_a_few_minutes_come_from_the_log() -> None:
    start, end = at("2026-05-05 10:10"), at("2026-05-05 10:20")
    assert check(start, end) == [Piece("log", start, end)]


def test_most_of_an_hour_is_the_hour_minus_its_edges() -> None:
    start, end = at("2026-05-05 10:05"), at("2026-05-05 10:55")
    assert check(start, end) == [
        Piece("h", at("2026-05-05 10:00"), at("2026-05-05 11:00")),
        Piece("log", at("2026-05-05 10:00"), start, -1),
        Piece("log", end, at("2026-05-05 11:00"), -1),
    ]


def test_an_empty_range_selects_nothing() -> None:
    moment = at("2026-05-05 10:05")
    assert check(moment, moment) == [Piece("log", moment, moment)]


@pytest.mark.parametrize("seed", range(3))
def test_random_ranges_ending_near_now(seed: int) -> None:
    """What is after `now` costs nothing, so the choices change near it: the cover must stay
    exact whatever they are."""
    rng = random.Random(1000 + seed)
    for _ in range(1500):
        start = _random_moment(rng)
        length = rng.choice([1, 3600, 86_400, 30 * 86_400, 95 * 86_400])
        end = start + timedelta(seconds=rng.random() * length)
        now = end + timedelta(seconds=rng.choice([0, 1, 300, 3600, 86_400]) * rng.random())
        check(start, end, coarsest=rng.choice(["m", "d"]), now=now)


def test_a_range_ending_moments_ago_reads_today_whole() -> None:
    """The last thirty days as a client's clock saw them, a moment before the server's: today
    is one daily row minus the moments since `end`, not every hour of today."""
    now = at("2026-11-22 07:56:00")
    end = at("2026-11-22 07:51:49")
    out = check(end - 30 * DAY, end, now=now)
    past_hours = [p for p in out if p.source == "h" and p.end is not None and p.start < now]
    assert all(p.start < at("2026-11-22 00:00") for p in past_hours), out
    assert Piece("log", end, at("2026-11-22 08:00"), -1) in out
    assert Piece("m", at("2026-11-01 00:00"), at("2026-12-01 00:00")) in out
