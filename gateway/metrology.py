"""Calibration status of a meter at a time: which certificate covers a reading, and whether it
is valid, expired, not yet valid, revoked or failed. Pure functions over registry entries.

Rules (docs/metrology.md): a certificate covers the local days from its calibration date to its
due date, both included. On a given day the meter's status comes from the latest certificate
(by calibration date, then by registration order) issued on or before that day:
- `valid` when it passed and the day is not after its due date,
- `expired` when the day is after its due date,
- `failed` when its result is `fail`,
- `revoked` when it was revoked and no other certificate covers the day,
- `not-yet-valid` when certificates exist but none was issued by that day,
- `none` when the meter has no certificate at all.
A period's status is the worst of its days' (a certificate expiring mid-period makes the
period `expired`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.models import CalibrationRecord, CalibrationStatus

# worst first: a period takes the first of these that any of its days has
SEVERITY = (
    CalibrationStatus.FAILED,
    CalibrationStatus.REVOKED,
    CalibrationStatus.EXPIRED,
    CalibrationStatus.NOT_YET_VALID,
    CalibrationStatus.NONE,
    CalibrationStatus.VALID,
)


@dataclass(frozen=True)
class Entry:
    """A certificate as the registry holds it now: registration order, and why it was
    revoked (or superseded), if it was."""

    seq: int
    record: CalibrationRecord
    revoked: str | None = None


def status_on(entries: Sequence[Entry], day: date) -> tuple[CalibrationStatus, Entry | None]:
    """The meter's status on a local day and the certificate that decides it."""
    issued = [e for e in entries if e.record.calibration_date <= day]
    if not issued:
        return (CalibrationStatus.NOT_YET_VALID if entries else CalibrationStatus.NONE), None
    latest = max(issued, key=lambda e: (e.record.calibration_date, e.seq))
    if latest.revoked is not None:
        standing = [e for e in issued if e.revoked is None]
        cover = max(standing, key=lambda e: (e.record.calibration_date, e.seq), default=None)
        if cover is None or cover.record.result == "fail" or day > cover.record.due_date:
            return CalibrationStatus.REVOKED, latest
        return CalibrationStatus.VALID, cover
    if latest.record.result == "fail":
        return CalibrationStatus.FAILED, latest
    if day > latest.record.due_date:
        return CalibrationStatus.EXPIRED, latest
    return CalibrationStatus.VALID, latest


def status_over(
    entries: Sequence[Entry], start: datetime, end: datetime
) -> tuple[CalibrationStatus, Entry | None]:
    """The worst status on any local day of [start, end) (site-local datetimes), with the
    certificate that decides it (for a valid period: the one valid at its start)."""
    last = (end - timedelta(microseconds=1)).date()
    days = [start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1)]
    found = [status_on(entries, d) for d in days]
    for status in SEVERITY:
        for s, entry in found:
            if s is status:
                return s, entry
    raise AssertionError("unreachable: every status is in SEVERITY")


def entries_of(records: Sequence[CalibrationRecord]) -> tuple[Entry, ...]:
    """Registry-like entries for certificates given directly (site.toml, tests)."""
    return tuple(Entry(i, r) for i, r in enumerate(records))
