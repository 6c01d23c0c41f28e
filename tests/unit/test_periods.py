"""Intervals: named lengths and calendar months, aligned at local midnight in the site's zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.periods import Interval, datetime_to_ns, fixed_offset_problem

SH = ZoneInfo("Asia/Shanghai")


def local(*args: int) -> int:
    return datetime_to_ns(datetime(*args, tzinfo=SH))


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("15min", (2026, 12, 31, 23, 45), (2027, 1, 1, 0, 0)),
        ("hour", (2026, 12, 31, 23, 0), (2027, 1, 1, 0, 0)),
        ("day", (2026, 12, 31, 0, 0), (2027, 1, 1, 0, 0)),
        ("month", (2026, 12, 1, 0, 0), (2027, 1, 1, 0, 0)),
    ],
)
def test_periods_align_in_shanghai(name, start, end):
    interval = Interval.parse(name)
    s = interval.start(local(2026, 12, 31, 23, 50), SH)
    assert s == local(*start)
    assert interval.end(s, SH) == local(*end)


def test_months_have_their_calendar_length():
    month = Interval.parse("month")
    feb = month.start(local(2028, 2, 15), SH)
    assert (month.end(feb, SH) - feb) // (86400 * 10**9) == 29  # 2028 is a leap year


def test_zones_that_change_their_offset_are_refused():
    assert fixed_offset_problem(SH) is None
    assert fixed_offset_problem(ZoneInfo("Etc/GMT-8")) is None
    problem = fixed_offset_problem(ZoneInfo("Europe/Berlin"))
    assert problem is not None
    assert "daylight saving" in problem


def test_an_interval_divides_the_coarser_ones():
    def parse(name: str) -> Interval:
        return Interval.parse(name)

    assert parse("15min").divides(parse("hour"))
    assert parse("hour").divides(parse("month"))
    assert parse("month").divides(parse("month"))
    assert not parse("month").divides(parse("day"))
    assert not parse("40min").divides(parse("hour"))


@pytest.mark.parametrize("text", ["7s", "week", "0s", "25h", "15 min"])
def test_bad_intervals_say_what_is_allowed(text):
    with pytest.raises(ValueError, match="15min, 30min, hour, day or month"):
        Interval.parse(text)


def test_lengths_are_named_when_they_have_a_name():
    assert Interval.parse("900s").name == "15min"
    assert Interval.parse("60min").name == "hour"
    assert Interval.parse("10s").seconds == 10


@given(ts=st.integers(0, 4_000_000_000 * 10**9), name=st.sampled_from(["15min", "day", "month"]))
def test_every_instant_is_in_exactly_one_period(ts, name):
    interval = Interval.parse(name)
    start = interval.start(ts, SH)
    end = interval.end(start, SH)
    assert start <= ts < end
    assert interval.start(end, SH) == end  # the next period starts where this one ends
