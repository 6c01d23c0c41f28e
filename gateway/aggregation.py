"""Counter readings -> ActivityRecords per meter and aligned period. Pure functions, no I/O.

Rule (documented in docs/architecture.md): each step between two consecutive good readings
of a counter is attributed to the period in which the later reading falls. A record's
quantity is therefore `end.value - start.value` (plus rollovers), where `start` is the last
good reading before the period and `end` the last good reading inside it; consecutive records
share their boundary reading, so the sum over any run of records equals the counter's advance,
with nothing lost or counted twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

from gateway.evidence import content_id, root_of
from gateway.factors import FactorSet
from gateway.models import (
    ActivityFlag,
    ActivityRecord,
    BoundaryReading,
    Meter,
    PointSpec,
    QualityStatus,
    Quantity,
    Reading,
)
from gateway.periods import datetime_to_ns, ns_to_datetime

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
    start_ns: int
    end_ns: int
    previous: Reading | None  # last good reading before start_ns
    readings: Sequence[Reading]  # all readings with start_ns <= ts < end_ns, oldest first
    gap_limit_ns: int
    tz: ZoneInfo
    factors: FactorSet | None = None  # tce and CO2e, when the site uses them


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


def aggregate(p: PeriodInput) -> ActivityRecord:
    good = [r for r in p.readings if r.quality.status is QualityStatus.GOOD and r.value is not None]
    bad_count = sum(1 for r in p.readings if r.quality.status is QualityStatus.BAD)
    chain = ([p.previous] if p.previous is not None else []) + good
    flags: set[ActivityFlag] = set()
    modulus = p.point.counter_modulus()

    # readings taken at or after a replacement's `at` are the new meter's
    replacements = sorted(
        ((datetime_to_ns(x.at), x) for x in p.meter.replacements if x.point == p.point.name),
        key=lambda item: item[0],
    )
    # energy counters cannot advance faster than the meter's rated power (20 % allowance)
    max_kwh_per_ns = (
        p.meter.rated_power_kw * Decimal("1.2") / Decimal(3600 * 10**9)
        if p.meter.rated_power_kw is not None and p.point.unit == "kWh"
        else None
    )
    total = Decimal(0)
    covered_ns = 0
    for a, b in itertools.pairwise(chain):
        if a.value is None or b.value is None:  # good readings always carry a value
            raise ValueError("good reading without a value")
        exchanges = [x for at, x in replacements if a.ts_ns < at <= b.ts_ns]
        if exchanges:
            # each meter's advance in turn: a to the first one's final reading, every new
            # meter from its initial to its final (the next exchange), the last one up to b
            parts = [exchanges[0].old_final - a.value]
            parts += [nxt.old_final - cur.new_initial for cur, nxt in itertools.pairwise(exchanges)]
            parts.append(b.value - exchanges[-1].new_initial)
            if min(parts) < 0:
                flags.add(ActivityFlag.COUNTER_BACKWARDS)
            step = sum((max(x, Decimal(0)) for x in parts), Decimal(0))
            flags.add(ActivityFlag.METER_REPLACED)
        else:
            step = b.value - a.value
        if step < 0:
            if modulus is not None and a.value > modulus / 2 and b.value < modulus / 2:
                step += modulus
                flags.add(ActivityFlag.ROLLOVER)
            else:
                flags.add(ActivityFlag.COUNTER_BACKWARDS)
                step = Decimal(0)
        if max_kwh_per_ns is not None and step > max_kwh_per_ns * (b.ts_ns - a.ts_ns):
            flags.add(ActivityFlag.IMPLAUSIBLE_STEP)
            step = Decimal(0)
        total += step
        span = b.ts_ns - a.ts_ns
        if span > p.gap_limit_ns:
            flags.add(ActivityFlag.GAP)
        else:
            covered_ns += span

    start = chain[0] if chain else None
    end = chain[-1] if chain else None
    if start is None or start.ts_ns > p.start_ns + p.gap_limit_ns:
        flags.add(ActivityFlag.GAP)  # nothing measured the beginning of the period
    if end is None or end.ts_ns < p.end_ns - p.gap_limit_ns:
        flags.add(ActivityFlag.GAP)  # nothing measured the end of the period
    if bad_count:
        flags.add(ActivityFlag.BAD_READINGS)

    period_start = ns_to_datetime(p.start_ns, p.tz)
    period_end = ns_to_datetime(p.end_ns, p.tz)
    calibration = p.meter.calibration_at(period_start.date())
    if calibration is None or not calibration.valid_at(period_end.date()):
        flags.add(ActivityFlag.CALIBRATION_EXPIRED)

    conversions = (
        p.factors.apply(p.meter.carrier, total, p.point.unit)
        if p.factors is not None and p.point.quantity in CONSUMED
        else None
    )

    def boundary(r: Reading | None) -> BoundaryReading | None:
        return BoundaryReading(ts_ns=r.ts_ns, value=r.value) if r and r.value is not None else None

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
        period_start=period_start,
        period_end=period_end,
        quantity=total,
        unit=p.point.unit,
        start=boundary(start),
        end=boundary(end),
        reading_count=len(p.readings),
        bad_reading_count=bad_count,
        coverage=min(1.0, covered_ns / (p.end_ns - p.start_ns)),
        flags=tuple(sorted(flags)),
        calibration_certificate=calibration.certificate_no if calibration else None,
        readings_root=root_of(chain),
        tce=conversions.tce if conversions else None,
        co2e_t=conversions.co2e_t if conversions else None,
        factors=conversions.factors if conversions else (),
    )
