"""Counter readings -> ActivityRecords per meter and aligned period. Pure functions, no I/O.

Rule (docs/architecture.md, "Activity data"): a counter is known at its good readings,
less the outliers set aside (gateway/activity/counters.py); between two consecutive ones (a, b)
it advanced by the step `d` (corrected for rollover and meter exchanges; 0 for a step
backwards or beyond what the meter can do). A period [S, E) gets, from every step, the part
of `d` that falls between its boundaries:

    part = share(E) - share(S),  share(t) = d * clip((t - a.ts) / (b.ts - a.ts), 0, 1)

rounded to the resolution of `d` (the register's). A step longer than the gap limit is not
spread over time it did not measure: it lands whole at `b.ts` (share(t) = d if t >= b.ts
else 0), in the period where measurement resumed, which is flagged `gap`. Because a boundary
belongs to two periods and both compute the same share there, the parts telescope: the sum
over any run of periods is the counter's advance exactly, and since 0 <= share <= d and share
never decreases, interpolation never creates energy (tests/unit/test_aggregation.py checks
both for any sequence of readings, rollovers, gaps and exchanges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from gateway.activity.counters import EXACT as EXACT  # exact sums: report, demo and platform use it
from gateway.activity.counters import Step, outliers, steps
from gateway.activity.factors import FactorSet
from gateway.evidence import content_id, root_of
from gateway.metrology.status import Entry, entries_of, status_on, status_over
from gateway.metrology.uncertainty import boundary_u, record_uncertainty, relative_systematic
from gateway.models import (
    ActivityFlag,
    ActivityRecord,
    BoundaryValue,
    CalibrationRecord,
    CalibrationStatus,
    DataQuality,
    Meter,
    PointSpec,
    QualityStatus,
    Quantity,
    Reading,
)
from gateway.periods import Interval, datetime_to_ns, ns_to_datetime

# quantities that are energy or resources consumed: only these get tce and CO2 (exported
# electricity, reactive energy and production counts do not add to a footprint)
CONSUMED = frozenset(
    {
        Quantity.ACTIVE_ENERGY_IMPORT,
        Quantity.GAS_VOLUME,
        Quantity.STEAM_MASS,
        Quantity.WATER_VOLUME,
    }
)


@dataclass(frozen=True)
class PeriodInput:
    """Everything one record is computed from."""

    uscc: str
    gateway_id: str
    meter: Meter
    point: PointSpec
    interval: Interval
    start_ns: int
    end_ns: int
    before: Sequence[Reading]  # the last CONTEXT good readings before start_ns, oldest first
    readings: Sequence[Reading]  # all readings with start_ns <= ts < end_ns, oldest first
    after: Sequence[Reading]  # the first CONTEXT good readings at or after end_ns
    gap_limit_ns: int
    tz: ZoneInfo
    factors: FactorSet | None = None  # tce and CO2e, when the site uses them
    calibrations: Sequence[Entry] | None = None  # the registry's; default: the meter's own


def record_id(uscc: str, gateway_id: str, meter_id: str, point: str, start: str, rev: int) -> str:
    """Identity of a record (same period and revision -> same id), derived from its key."""
    key = {
        "uscc": uscc,
        "gateway_id": gateway_id,
        "meter_id": meter_id,
        "point": point,
        "period_start": start,
        "revision": rev,
    }
    return content_id(key)[:32]


def revise(new: ActivityRecord, latest: ActivityRecord) -> ActivityRecord | None:
    """`new` as the next revision of `latest` (same period), or None when nothing changed."""
    same = {"record_id", "revision", "supersedes"}
    if new.model_dump(exclude=same) == latest.model_dump(exclude=same):
        return None
    rev = latest.revision + 1
    return new.model_copy(
        update={
            "revision": rev,
            "supersedes": latest.record_id,
            "record_id": record_id(
                new.uscc,
                new.gateway_id,
                new.meter_id,
                new.point,
                new.period_start.isoformat(),
                rev,
            ),
        }
    )


def boundary(
    t: int, chain: Sequence[Reading], stepped: Sequence[Step], modulus: Decimal | None
) -> BoundaryValue:
    """The counter at time t (chain: the good readings around the period, oldest first)."""
    if not chain:
        return BoundaryValue(value=None)
    for r in chain:
        if r.ts_ns == t:
            return BoundaryValue(value=r.value, distance_ns=0)
    for s in stepped:
        if s.a.ts_ns < t < s.b.ts_ns:
            distance = min(t - s.a.ts_ns, s.b.ts_ns - t)
            if s.exchange or s.unmeasured:  # no single counter value: a swap, or unknown
                return BoundaryValue(value=None, distance_ns=distance)
            if s.gap:
                return BoundaryValue(value=s.a.value, distance_ns=distance)
            assert s.a.value is not None
            value = s.a.value + s.share(t)
            if modulus is not None and value >= modulus:
                value -= modulus
            return BoundaryValue(value=value, interpolated=True, distance_ns=distance)
    if chain[-1].ts_ns < t:  # held at the last reading: nothing measured since
        return BoundaryValue(value=chain[-1].value, distance_ns=t - chain[-1].ts_ns)
    return BoundaryValue(value=None, distance_ns=chain[0].ts_ns - t)  # not measured yet


def aggregate(p: PeriodInput) -> ActivityRecord:
    with localcontext(EXACT):  # register values (float64 ones have ~27 digits) add exactly
        return _aggregate(p)


def _corrected(
    stepped: Sequence[Step],
    entries: Sequence[Entry],
    s_ns: int,
    e_ns: int,
    tz: ZoneInfo,
    indicated: Decimal,
) -> tuple[Decimal, Decimal | None]:
    """The quantity with each certificate's correction applied to the part of the period it
    covers (split at the local midnights where the deciding certificate changes), and the
    correction when one applies to the whole period (None when none or several apply)."""
    spans: list[tuple[int, int, Decimal | None]] = []  # (from, to, correction percent)
    t = s_ns
    while t < e_ns:
        day = ns_to_datetime(t, tz).date()
        _, entry = status_on(entries, day)
        correction = entry.record.correction_percent if entry is not None else None
        midnight = datetime_to_ns(datetime.combine(day + timedelta(days=1), time(0), tz))
        end = min(midnight, e_ns)
        if spans and spans[-1][2] == correction:
            spans[-1] = (spans[-1][0], end, correction)
        else:
            spans.append((t, end, correction))
        t = end
    if len(spans) == 1:
        c = spans[0][2]
        return (indicated * (1 + c / 100), c) if c else (indicated, None)
    total = Decimal(0)
    for a, b, c in spans:
        part = sum((s.share(b) - s.share(a) for s in stepped), Decimal(0))
        total += part * (1 + c / 100) if c else part
    return total, None


def _share(part: Decimal, total: Decimal) -> Decimal:
    """part / total to four decimal places (0 of nothing)."""
    return (part / total).quantize(Decimal("0.0001")) if total else Decimal(0)


def _boundary_u(point: PointSpec, b: BoundaryValue, step: Decimal) -> Decimal:
    resolution = point.resolution(b.value) if b.value is not None else None
    return boundary_u(b.value, b.interpolated, step, resolution)


def _straddling(stepped: Sequence[Step], t: int) -> Decimal:
    """The step across time t (0 when a reading is at t or none straddles it)."""
    return next((s.d for s in stepped if s.a.ts_ns < t < s.b.ts_ns), Decimal(0))


@dataclass(frozen=True)
class _Chain:
    """The readings and steps one period is computed from."""

    readings: Sequence[Reading]  # the last usable reading before the period, those inside,
    #                              and those at the first usable instant at or after its end
    stepped: Sequence[Step]  # the steps between them, decided within the whole window
    bad_count: int  # bad readings in the period, and good ones set aside as outliers


def _chain(p: PeriodInput) -> _Chain:
    """The period's chain of usable readings: outliers among the good readings of the window
    (before, inside, after) set aside, the steps between the rest decided within it."""
    s_ns, e_ns = p.start_ns, p.end_ns
    good = [r for r in p.readings if r.quality.status is QualityStatus.GOOD and r.value is not None]
    window = [*p.before, *good, *p.after]
    set_aside = outliers(window, p.meter, p.point, p.gap_limit_ns)
    usable = [r for i, r in enumerate(window) if i not in set_aside]
    lo = max((i for i, r in enumerate(usable) if r.ts_ns < s_ns), default=0)
    ends = [r.ts_ns for r in usable if r.ts_ns >= e_ns]
    hi = sum(1 for r in usable if not ends or r.ts_ns <= ends[0])
    stepped = steps(usable, p.meter, p.point, p.gap_limit_ns)[lo : max(lo, hi - 1)]
    bad_count = sum(1 for r in p.readings if r.quality.status is QualityStatus.BAD) + sum(
        1 for i in set_aside if s_ns <= window[i].ts_ns < e_ns
    )
    return _Chain(usable[lo:hi], stepped, bad_count)


@dataclass
class _Advance:
    """What the steps give a period: the counter's advance in it, the parts of it that are
    shares of steps across a boundary (`interpolated`) or across a gap (`landed`), the time
    they measured, and the flags of the steps that touch it (`gap` when not all of it was
    measured)."""

    total: Decimal
    interpolated: Decimal
    landed: Decimal
    covered_ns: int
    flags: set[ActivityFlag]

    def data_quality(self) -> DataQuality:
        """Where the advance comes from (before any certificate's correction)."""
        indicated, interpolated, landed = self.total, self.interpolated, self.landed
        return DataQuality(
            measured_share=_share(indicated - interpolated - landed, indicated),
            interpolated_share=_share(interpolated, indicated),
            gap_share=_share(landed, indicated),
        )


def _advance(stepped: Sequence[Step], s_ns: int, e_ns: int) -> _Advance:
    flags: set[ActivityFlag] = set()
    total = Decimal(0)
    covered_ns = 0
    interpolated = landed = Decimal(0)
    for s in stepped:
        part = s.share(e_ns) - s.share(s_ns)
        total += part
        if s.gap:
            landed += part  # measured, but when within the gap is not known
        elif s.a.ts_ns < s_ns or s.b.ts_ns > e_ns:
            interpolated += part  # a share of a step across a boundary
        if s.touches(s_ns, e_ns):
            flags |= s.flags
        if not (s.gap or s.unmeasured):
            covered_ns += max(0, min(e_ns, s.b.ts_ns) - max(s_ns, s.a.ts_ns))
    if covered_ns < e_ns - s_ns:
        flags.add(ActivityFlag.GAP)  # part of the period was not measured
    return _Advance(total, interpolated, landed, covered_ns, flags)


def _calibration(
    p: PeriodInput, start: datetime, end: datetime
) -> tuple[Sequence[Entry], CalibrationStatus, CalibrationRecord | None]:
    """The meter's certificates (the registry's, else its own), its worst calibration status
    over the period and the certificate valid over all of it (None when none is)."""
    entries = p.calibrations if p.calibrations is not None else entries_of(p.meter.calibrations)
    status, deciding = status_over(entries, start, end)
    valid = status is CalibrationStatus.VALID
    return entries, status, deciding.record if valid and deciding is not None else None


def _aggregate(p: PeriodInput) -> ActivityRecord:
    s_ns, e_ns = p.start_ns, p.end_ns
    found = _chain(p)
    chain, stepped = found.readings, found.stepped
    advance = _advance(stepped, s_ns, e_ns)
    flags = advance.flags
    if found.bad_count:
        flags.add(ActivityFlag.BAD_READINGS)
    modulus = p.point.counter_modulus()
    start, end = boundary(s_ns, chain, stepped, modulus), boundary(e_ns, chain, stepped, modulus)
    if start.interpolated or end.interpolated:
        flags.add(ActivityFlag.INTERPOLATED)

    period_start = ns_to_datetime(s_ns, p.tz)
    period_end = ns_to_datetime(e_ns, p.tz)
    entries, calibration_status, calibration = _calibration(p, period_start, period_end)
    if calibration is None:
        flags.add(ActivityFlag.CALIBRATION_EXPIRED)  # no valid calibration over the period

    indicated = total = advance.total
    correction: Decimal | None = None
    valid = calibration_status is CalibrationStatus.VALID
    if valid and p.point.quantity is not Quantity.PRODUCTION_COUNT:
        total, correction = _corrected(stepped, entries, s_ns, e_ns, p.tz, indicated)
    relative, basis = relative_systematic(p.meter.carrier, p.meter.accuracy_class, calibration)
    uncertainty = record_uncertainty(
        total,
        relative,
        basis,
        _boundary_u(p.point, start, _straddling(stepped, s_ns)),
        _boundary_u(p.point, end, _straddling(stepped, e_ns)),
    )
    conversions = (
        p.factors.apply(p.meter.carrier, total, p.point.unit)
        if p.factors is not None and p.point.quantity in CONSUMED
        else None
    )
    return ActivityRecord(
        record_id=record_id(
            p.uscc, p.gateway_id, p.meter.id, p.point.name, period_start.isoformat(), 0
        ),
        uscc=p.uscc,
        gateway_id=p.gateway_id,
        meter_id=p.meter.id,
        line=p.meter.line,
        carrier=p.meter.carrier,
        point=p.point.name,
        point_quantity=p.point.quantity,
        product=p.point.product,
        allocation=p.meter.allocation,
        interval=p.interval.name,
        period_start=period_start,
        period_end=period_end,
        quantity=total,
        unit=p.point.unit,
        indicated_quantity=indicated if total != indicated or correction is not None else None,
        correction_percent=correction,
        start=start,
        end=end,
        reading_count=len(p.readings),
        bad_reading_count=found.bad_count,
        coverage=advance.covered_ns / (e_ns - s_ns),
        flags=tuple(sorted(flags)),
        calibration_certificate=calibration.certificate_no if calibration else None,
        calibration_status=calibration_status,
        uncertainty=uncertainty,
        data_quality=advance.data_quality(),
        readings_root=root_of(chain, without_numbers=True),  # a Reading's JSON has none
        tce=conversions.tce if conversions else None,
        co2e_t=conversions.co2e_t if conversions else None,
        co2e_footprint_t=conversions.co2e_footprint_t if conversions else None,
        factors=conversions.factors if conversions else (),
    )
