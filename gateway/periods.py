"""Time on the gateway: UTC nanosecond timestamps and periods aligned to local midnight.

Pure functions. Periods divide a day and are aligned in the site's time zone (Asia/Shanghai
by default), so a 15-minute or hourly period starts where a Chinese operator expects it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

NS = 1_000_000_000


def ns_to_datetime(ts_ns: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts_ns // NS, tz) + timedelta(microseconds=ts_ns % NS // 1000)


def datetime_to_ns(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def period_start_ns(ts_ns: int, interval_s: int, tz: ZoneInfo) -> int:
    """Start of the period containing ts, aligned to local midnight in `tz`."""
    offset = ns_to_datetime(ts_ns, tz).utcoffset()
    offset_ns = int(offset.total_seconds()) * NS if offset else 0
    local = ts_ns + offset_ns
    return local - local % (interval_s * NS) - offset_ns
