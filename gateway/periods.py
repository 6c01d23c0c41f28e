"""Time on the gateway: UTC nanosecond timestamps and periods aligned in the site's time zone.

Pure functions. An `Interval` is a fixed length that divides a day (15 min, hour, day, or a
number of seconds) or a calendar month; its periods start at local midnight in the site's zone
(Asia/Shanghai by default), so a 15-minute, daily or monthly period starts where a Chinese
operator expects it. The zone must keep one UTC offset (`fixed_offset_problem`): where clocks
change, local periods would repeat or skip an hour and a day would not be 24 hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

NS = 1_000_000_000
DAY_S = 86400
NAMED = {"15min": 900, "30min": 1800, "hour": 3600, "day": DAY_S}
_LENGTH = re.compile(r"^(\d+)(s|min|h)$")
_UNIT_S = {"s": 1, "min": 60, "h": 3600}


def ns_to_datetime(ts_ns: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts_ns // NS, tz) + timedelta(microseconds=ts_ns % NS // 1000)


def datetime_to_ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def period_start_ns(ts_ns: int, interval_s: int, tz: ZoneInfo) -> int:
    """Start of the fixed-length period containing ts, aligned to local midnight in `tz`."""
    offset = ns_to_datetime(ts_ns, tz).utcoffset()
    offset_ns = int(offset.total_seconds()) * NS if offset else 0
    local = ts_ns + offset_ns
    return local - local % (interval_s * NS) - offset_ns


def fixed_offset_problem(tz: ZoneInfo, around: datetime | None = None) -> str | None:
    """Why periods cannot be aligned in `tz` (its UTC offset changes within two years of
    `around`, default now), or None."""
    centre = around or datetime.now(UTC)
    offsets = {(centre + timedelta(days=d)).astimezone(tz).utcoffset() for d in range(-730, 731, 7)}
    if len(offsets) > 1:
        return (
            f"{tz.key} changes its UTC offset (daylight saving), so local periods would repeat"
            " or skip an hour; use a zone with one offset, e.g. Asia/Shanghai or Etc/GMT-8"
        )
    return None


@dataclass(frozen=True)
class Interval:
    """A period length: `seconds` dividing a day, or a calendar month (`seconds` None)."""

    name: str
    seconds: int | None

    @classmethod
    def parse(cls, text: str) -> Interval:
        """'15min', '30min', 'hour', 'day', 'month', or a length like '10s', '5min', '2h'
        that divides a day; ValueError says what is allowed."""
        if text == "month":
            return cls("month", None)
        if text in NAMED:
            return cls(text, NAMED[text])
        m = _LENGTH.match(text)
        seconds = int(m.group(1)) * _UNIT_S[m.group(2)] if m else 0
        if not m or seconds <= 0 or DAY_S % seconds:
            raise ValueError(
                f"{text!r} is not an interval: use 15min, 30min, hour, day or month, or a length"
                " such as 10s, 5min or 2h that divides a day (so periods align to midnight)"
            )
        return cls(next((k for k, v in NAMED.items() if v == seconds), text), seconds)

    def __str__(self) -> str:
        return self.name

    def start(self, ts_ns: int, tz: ZoneInfo) -> int:
        """Start of the period containing ts."""
        if self.seconds is not None and self.seconds < DAY_S:
            return period_start_ns(ts_ns, self.seconds, tz)
        local = ns_to_datetime(ts_ns, tz)
        first = local.replace(
            day=1 if self.seconds is None else local.day, hour=0, minute=0, second=0, microsecond=0
        )
        return datetime_to_ns(first.replace(tzinfo=tz))

    def end(self, start_ns: int, tz: ZoneInfo) -> int:
        """End of the period that starts at `start_ns` (the next one's start)."""
        if self.seconds is not None and self.seconds < DAY_S:
            return start_ns + self.seconds * NS
        local = ns_to_datetime(start_ns, tz).replace(tzinfo=None)
        if self.seconds is None:
            nxt = local.replace(year=local.year + local.month // 12, month=local.month % 12 + 1)
        else:
            nxt = local + timedelta(days=1)
        return datetime_to_ns(nxt.replace(tzinfo=tz))

    def divides(self, other: Interval) -> bool:
        """Whether every period of `other` is a whole number of this interval's periods."""
        if self.seconds is None:
            return other.seconds is None
        return (other.seconds or DAY_S) % self.seconds == 0
