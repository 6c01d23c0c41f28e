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

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.models import (
    CalibrationRecord,
    CalibrationStatus,
    Meter,
    PointKind,
    PointSpec,
    QualityStatus,
    Reading,
)

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


# --- traceability chain ------------------------------------------------------------------


class LinkState(enum.StrEnum):
    VERIFIED = "verified"  # present, and valid at the time
    EXPIRED = "expired"  # present, but not valid at the time (expired, revoked, failed, …)
    MISSING = "missing"  # the records do not say


@dataclass(frozen=True)
class Link:
    kind: str  # reading, meter, certificate, laboratory, reference standard, …
    state: LinkState
    label: str
    details: dict[str, str]


def named_status(
    entries: Sequence[Entry], number: str, day: date
) -> tuple[CalibrationStatus, Entry | None]:
    """The status of one particular certificate on a day (a reference standard's link
    follows the certificate the previous one names, not whichever is newest)."""
    entry = max(
        (e for e in entries if e.record.certificate_no == number), key=lambda e: e.seq, default=None
    )
    if entry is None:
        return CalibrationStatus.NONE, None
    record = entry.record
    if entry.revoked is not None:
        return CalibrationStatus.REVOKED, entry
    if record.result == "fail":
        return CalibrationStatus.FAILED, entry
    if day < record.calibration_date:
        return CalibrationStatus.NOT_YET_VALID, entry
    if day > record.due_date:
        return CalibrationStatus.EXPIRED, entry
    return CalibrationStatus.VALID, entry


def complete(links: Sequence[Link]) -> bool:
    """Every link verified, ending at a national measurement standard."""
    return (
        bool(links)
        and links[-1].kind == "national standard"
        and all(link.state is LinkState.VERIFIED for link in links)
    )


def traced_point(points: Sequence[PointSpec]) -> str:
    """The point whose last reading opens a meter's chain (`trace`): its first counter (what
    records are made of), else its first point that is not a label, else its first point."""
    counters = [p for p in points if p.kind is PointKind.COUNTER]
    numbers = [p for p in points if p.kind is not PointKind.LABEL]
    return (counters or numbers or list(points))[0].name


def trace(
    meter: Meter,
    reading: Reading | None,
    at: datetime,
    certificates_of: Callable[[str], Sequence[Entry]],
    find_certificate: Callable[[str], tuple[str, Sequence[Entry]] | None],
) -> list[Link]:
    """The chain from a reading to the national standard, as far as the records go:
    reading -> meter -> its certificate valid at `at` -> laboratory -> reference standard ->
    the reference standard's certificate (when registered, e.g. under the standard's own
    id) -> its laboratory -> … `find_certificate(number)` returns (holder id, its entries)."""
    links = [_reading_link(reading), _meter_link(meter)]
    holder, entries, seen = meter.id, certificates_of(meter.id), set()
    named: str | None = None  # past the meter: the certificate the previous link names
    while True:
        status, entry = (
            status_on(entries, at.date())
            if named is None
            else named_status(entries, named, at.date())
        )
        if entry is None:
            links.append(Link("certificate", LinkState.MISSING, f"{holder}: {status}", {}))
            break
        certified, goes_on = _certificate_links(holder, entry, status)
        links += certified
        if not goes_on:
            break
        number = entry.record.reference_standard_certificate
        found = find_certificate(number) if number and number not in seen else None
        if found is None:
            if number:
                links.append(
                    Link(
                        "certificate",
                        LinkState.MISSING,
                        f"{number}: not in the registry (the chain ends here)",
                        {},
                    )
                )
            break
        seen.add(number)
        holder, entries = found
        named = number
    return links


def _reading_link(reading: Reading | None) -> Link:
    if reading is None:
        return Link("reading", LinkState.MISSING, "no reading stored at or before this time", {})
    return Link(
        "reading",
        LinkState.EXPIRED if reading.quality.status is QualityStatus.BAD else LinkState.VERIFIED,
        f"{reading.point} = {_shown(reading)} ({reading.quality.status})",
        {"ts_ns": str(reading.ts_ns), "raw": reading.raw.hex()},
    )


def _meter_link(meter: Meter) -> Link:
    return Link(
        "meter",
        LinkState.VERIFIED,
        f"{meter.id}: {meter.model}, serial {meter.serial}",
        {"serial": meter.serial, "model": meter.model, "accuracy_class": meter.accuracy_class},
    )


def _certificate_links(
    holder: str, entry: Entry, status: CalibrationStatus
) -> tuple[list[Link], bool]:
    """The links of one certificate of `holder`: the certificate, its laboratory and what
    it was compared with; True when the chain goes on to the reference standard's own
    certificate (not at a national standard, and a reference standard is stated)."""
    c = entry.record
    state = LinkState.VERIFIED if status is CalibrationStatus.VALID else LinkState.EXPIRED
    links = [
        Link(
            "certificate",
            state,
            f"{c.certificate_no} ({c.kind}, {c.calibration_date} .. {c.due_date}): {status}",
            {
                "holder": holder,
                "result": c.result,
                "expanded_uncertainty": c.expanded_uncertainty or "",
                "dcc_sha256": c.dcc_sha256 or "",
                **({"revoked": entry.revoked} if entry.revoked else {}),
            },
        ),
        Link(
            "laboratory",
            LinkState.VERIFIED if c.accreditation_no else LinkState.MISSING,
            f"{c.lab}, accreditation {c.accreditation_no or 'not stated'}",
            {"lab": c.lab, "accreditation_no": c.accreditation_no or ""},
        ),
    ]
    if c.reference_standard_is_national:
        links.append(
            Link(
                "national standard",
                LinkState.VERIFIED,
                f"{c.reference_standard or '(unnamed)'} (the chain ends at a national"
                " measurement standard)",
                {"reference_standard": c.reference_standard or ""},
            )
        )
        return links, False
    if not c.reference_standard and not c.reference_standard_certificate:
        links.append(Link("reference standard", LinkState.MISSING, "not stated", {}))
        return links, False
    links.append(
        Link(
            "reference standard",
            LinkState.VERIFIED if c.reference_standard_certificate else LinkState.MISSING,
            f"{c.reference_standard or '(unnamed)'}, certificate"
            f" {c.reference_standard_certificate or 'not stated'}"
            + (f" by {c.reference_standard_lab}" if c.reference_standard_lab else ""),
            {
                "reference_standard": c.reference_standard or "",
                "certificate": c.reference_standard_certificate or "",
                "lab": c.reference_standard_lab or "",
            },
        )
    )
    return links, True


def class_meets(carrier: str, actual: str, required: str) -> bool | None:
    """Whether a meter of class `actual` satisfies a requirement of class `required` (its
    error limit is no wider); None when either limit is unknown (gateway/data/
    accuracy-classes.toml)."""
    from gateway.metrology.uncertainty import class_limits

    limits = class_limits()
    actual, required = actual.strip(), required.strip()
    have, need = limits.get((carrier, actual)), limits.get((carrier, required))
    if have is None or need is None:
        return None
    # an S class (IEC 62053-22) also holds its limit at low currents: a plain class does not
    # meet an S requirement even with the same limit at reference conditions
    return have <= need and (actual.endswith("S") or not required.endswith("S"))


def class_findings(meters: Iterable[tuple[str, str, str, str | None]]) -> list[str]:
    """Of (meter id, carrier, accuracy class, required class) each meter whose class does not
    meet its required one, or cannot be compared with it, in words."""
    found = []
    for meter_id, carrier, actual, required in meters:
        if required is None:
            continue
        meets = class_meets(carrier, actual, required)
        if meets is False:
            found.append(
                f"{meter_id}: accuracy class {actual} does not meet the required {required}"
            )
        elif meets is None:
            found.append(
                f"{meter_id}: cannot compare class {actual} with the required {required}"
                " (no error limit known for one of them)"
            )
    return found


def _shown(reading: Reading) -> str:
    if reading.kind is PointKind.LABEL:
        return repr(reading.text)
    return f"{reading.value} {reading.unit}"
