"""Counter readings -> activity records: exact, telescoping, flagged."""

from __future__ import annotations

import itertools
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from collectors.modbus import ModbusPoint
from gateway.activity.aggregation import PeriodInput, aggregate
from gateway.activity.counters import CONTEXT
from gateway.activity.factors import FactorSet
from gateway.models import (
    ActivityFlag,
    CalibrationRecord,
    Carrier,
    Meter,
    MeterReplacement,
    PointKind,
    Quality,
    Quantity,
    Reading,
)
from gateway.periods import NS, Interval, datetime_to_ns, ns_to_datetime, period_start_ns

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime_to_ns(datetime(2026, 11, 25, 10, 0, tzinfo=SH))
POINT = ModbusPoint(
    quantity=Quantity.ACTIVE_ENERGY_IMPORT,
    kind=PointKind.COUNTER,
    unit="kWh",
    address=0,
    data_type="uint32",
    scale=Decimal("0.01"),
)
CAL = CalibrationRecord(
    certificate_no="C-1", lab="lab", calibration_date=date(2026, 1, 1), due_date=date(2026, 12, 31)
)
METER = Meter(
    id="M1",
    serial="S",
    model="m",
    carrier=Carrier.ELECTRICITY,
    accuracy_class="1",
    calibrations=(CAL,),
)


def reading(t_s: float, value: str | None, reason: str | None = None) -> Reading:
    return Reading(
        meter_id="M1",
        point="active_energy_import",
        quantity=Quantity.ACTIVE_ENERGY_IMPORT,
        kind=PointKind.COUNTER,
        unit="kWh",
        ts_ns=T0 + int(t_s * NS),
        raw=b"\x00\x00\x00\x00",
        value=Decimal(value) if value is not None else None,
        quality=Quality.bad(reason or "timeout") if value is None else Quality.good(),
    )


def run(
    readings: list[Reading],
    start_s: float,
    end_s: float,
    meter: Meter = METER,
    gap_s: float = 3,
    point: ModbusPoint = POINT,
    factors: FactorSet | None = None,
):
    start, end = T0 + int(start_s * NS), T0 + int(end_s * NS)
    before = [r for r in readings if r.ts_ns < start and r.value is not None]
    inside = [r for r in readings if start <= r.ts_ns < end]
    after = [r for r in readings if r.ts_ns >= end and r.value is not None]
    return aggregate(
        PeriodInput(
            uscc="91350100M000100Y43",
            gateway_id="gw",
            meter=meter,
            point=point,
            interval=Interval.parse("1s"),
            start_ns=start,
            end_ns=end,
            before=before[-CONTEXT:],
            readings=inside,
            after=after[:CONTEXT],
            gap_limit_ns=int(gap_s * NS),
            tz=SH,
            factors=factors,
        )
    )


def test_boundaries_are_interpolated_and_gaps_land_where_measurement_resumed():
    rs = [
        reading(t, v) for t, v in [(-0.5, "100.00"), (1, "100.10"), (2, "100.25"), (9.5, "101.01")]
    ]
    # 0.10 kWh from -0.5 s to 1 s: a third of it before 0 s, rounded to the register's 0.01;
    # the gap from 2 s to 9.5 s exceeds the 3 s limit: its 0.76 kWh is not spread, it lands
    # at 9.5 s, and the period has no reading after its end: held at the last one
    rec = run(rs, 0, 10)
    assert rec.quantity == Decimal("0.07") + Decimal("0.15") + Decimal("0.76")
    assert rec.start.value == Decimal("100.03")
    assert rec.start.interpolated
    assert rec.start.distance_ns == NS // 2
    assert rec.end.value == Decimal("101.01")
    assert not rec.end.interpolated
    assert rec.end.distance_ns == NS // 2
    assert {ActivityFlag.GAP, ActivityFlag.INTERPOLATED} <= set(rec.flags)
    assert rec.coverage == 0.2  # -0.5..2 s measured, 0..2 s of it inside
    dq = rec.data_quality
    assert dq is not None
    assert (dq.interpolated_share, dq.measured_share, dq.gap_share) == (
        Decimal("0.0714"),  # 0.07 of 0.98 kWh
        Decimal("0.1531"),  # 0.15
        Decimal("0.7755"),  # 0.76
    )
    assert rec.calibration_certificate == "C-1"
    assert ActivityFlag.CALIBRATION_EXPIRED not in rec.flags


def test_a_reading_on_the_boundary_needs_no_interpolation():
    rs = [reading(t, v) for t, v in [(0, "5.00"), (1, "5.50"), (2, "6.00")]]
    rec = run(rs, 0, 2)
    assert rec.quantity == Decimal("1.00")
    assert rec.start.value == Decimal("5.00")
    assert not rec.start.interpolated
    assert rec.end.value == Decimal("6.00")
    assert rec.end.distance_ns == 0
    assert ActivityFlag.INTERPOLATED not in rec.flags
    assert ActivityFlag.GAP not in rec.flags
    assert rec.coverage == 1


def test_rollover_at_register_maximum():
    top = Decimal(2**32) * Decimal("0.01")  # 42949672.96 kWh
    rs = [reading(-0.5, str(top - Decimal("0.05"))), reading(1, "0.03"), reading(2, "0.04")]
    rec = run(rs, 0, 2)
    assert rec.quantity == Decimal("0.08") - Decimal("0.03") + Decimal("0.01")
    assert rec.start.value == top - Decimal("0.02")  # a third of the way across the wrap
    assert ActivityFlag.ROLLOVER in rec.flags


def test_counter_going_backwards_is_flagged_not_counted():
    before = [reading(t - 5, f"{500 + t / 10:.2f}") for t in range(5)]  # 500.00 .. 500.40
    after = [reading(t / 2, f"{10 + t / 4:.2f}") for t in range(1, 6)]  # 10.00 .. 11.00
    rec = run(before + after, 0, 2)
    assert rec.quantity == Decimal("0.75")  # 10.00 at 0.5 s to 10.75 at 2 s
    assert ActivityFlag.COUNTER_BACKWARDS in rec.flags
    assert rec.coverage == 0.75  # the half second it went back in is unmeasured


def test_bad_readings_are_flagged_and_skipped():
    rs = [reading(0, "1.00"), reading(0.5, None, "timeout"), reading(1.5, "1.20"), reading(2, "2")]
    rec = run(rs, 0, 2)
    assert rec.quantity == Decimal("1.00")
    assert rec.bad_reading_count == 1
    assert ActivityFlag.BAD_READINGS in rec.flags


def test_expired_calibration_is_flagged():
    old = CalibrationRecord(
        certificate_no="OLD",
        lab="lab",
        calibration_date=date(2024, 1, 1),
        due_date=date(2025, 1, 1),
    )
    meter = METER.model_copy(update={"calibrations": (old,)})
    rec = run([reading(-0.5, "1"), reading(1, "2")], 0, 2, meter)
    assert ActivityFlag.CALIBRATION_EXPIRED in rec.flags
    assert rec.calibration_certificate is None


def test_no_readings_means_zero_with_gap_and_no_coverage():
    rec = run([], 0, 10)
    assert rec.quantity == 0
    assert rec.coverage == 0
    assert rec.start.value is None
    assert rec.start.distance_ns is None
    assert ActivityFlag.GAP in rec.flags


def test_periods_align_to_shanghai_midnight():
    ts = datetime_to_ns(datetime(2026, 11, 25, 0, 7, tzinfo=SH))
    start = period_start_ns(ts, 86400, SH)
    assert start == datetime_to_ns(datetime(2026, 11, 25, 0, 0, tzinfo=SH))
    assert period_start_ns(ts, 900, SH) == start  # 00:00-00:15


def test_record_id_is_stable_and_readings_root_tracks_content():
    rs = [reading(-0.5, "1.00"), reading(1, "1.50")]
    a, b = run(rs, 0, 2), run(rs, 0, 2)
    assert a.record_id == b.record_id
    assert a.readings_root == b.readings_root
    tampered = [rs[0], reading(1, "1.51")]
    assert run(tampered, 0, 2).readings_root != a.readings_root


def at(t_s: float) -> datetime:
    return ns_to_datetime(T0 + int(t_s * NS), SH)


def test_meter_replacement_counts_both_sides_of_the_exchange():
    swapped = METER.model_copy(
        update={
            "replacements": (
                MeterReplacement(
                    at=at(30), old_final=Decimal("100.50"), new_initial=Decimal("0.00")
                ),
            )
        }
    )
    rs = [reading(10, "100.00"), reading(50, "0.30"), reading(90, "0.70")]
    record = run(rs, 0, 120, swapped)
    assert record.quantity == Decimal("1.20")  # 0.50 old + 0.30 + 0.40 new
    assert ActivityFlag.METER_REPLACED in record.flags
    assert ActivityFlag.COUNTER_BACKWARDS not in record.flags
    # without the replacement in site.toml the drop is a counter going backwards, not counted
    plain = run(rs, 0, 120)
    assert plain.quantity == Decimal("0.40")
    assert ActivityFlag.COUNTER_BACKWARDS in plain.flags


def test_steps_beyond_rated_power_are_flagged_and_not_counted():
    rated = METER.model_copy(update={"rated_power_kw": Decimal("10")})
    # 10 kW for 60 s is 0.1667 kWh; 1.2 x that is allowed, a jump of 5 kWh is not
    rs = [reading(0, "1.00"), reading(60, "1.15"), reading(120, "6.15"), reading(180, "6.30")]
    record = run(rs, 0, 240, rated)
    assert record.quantity == Decimal("0.30")
    assert ActivityFlag.IMPLAUSIBLE_STEP in record.flags


MOD = 65536  # a 16-bit register of 0.01 kWh rolls over at 655.36 kWh


@given(
    steps=st.lists(st.tuples(st.integers(1, 4000), st.integers(0, 4000)), min_size=1, max_size=60),
    exchange=st.none() | st.tuples(st.integers(0, 59), st.integers(0, MOD), st.integers(0, MOD)),
    cuts=st.lists(st.integers(1, 250), max_size=12),
    gap_s=st.sampled_from([0.5, 3.0, 10.0]),
)
def test_sum_over_periods_equals_counter_advance_and_no_period_gains_energy(
    steps, exchange, cuts, gap_s
):
    """For any readings of a counter that rolls over, with gaps and a meter exchange, however
    periods cut them: the periods sum exactly to the energy the meters measured (nothing lost
    or counted twice: interpolated boundaries telescope), no period gets less than zero or more
    than the steps crossing it (interpolation never creates energy), and neighbours agree on
    their shared boundary. Any eight consecutive steps stay below half the register's range,
    so every rollover is recognisable (gateway/activity/counters.py); an exchange happens at a reading, with `tail` advanced unread on the old
    meter and the new one starting from `initial`."""
    point = POINT.model_copy(update={"data_type": "uint16"})
    where = exchange[0] % len(steps) if exchange else None
    t_ms, register, energy = 250, 0, [0]  # energy: what the meters measured, cumulative
    rs = [reading(0.25, "0.00")]
    replacements = []
    for i, (dt_ms, step) in enumerate(steps):
        t_ms += dt_ms
        if i == where:
            assert exchange is not None
            tail = min(exchange[1], MOD - 1 - register)  # the old meter does not wrap unread
            initial = exchange[2] % MOD
            step = min(step, MOD - 1 - initial)  # nor the new one before its first reading
            replacements.append(
                MeterReplacement(
                    at=at(t_ms / 1000),
                    old_final=Decimal(register + tail) / 100,
                    new_initial=Decimal(initial) / 100,
                )
            )
            energy.append(energy[-1] + tail + step)
            register = initial + step
        else:
            energy.append(energy[-1] + step)
            register = (register + step) % MOD
        rs.append(reading(t_ms / 1000, str(Decimal(register) / 100)))
    # steps here jump between 0 and 300 kWh at random, which the meter's own rate would call
    # implausible (tested below): a rated power no step reaches keeps this test on telescoping
    meter = METER.model_copy(
        update={"replacements": tuple(replacements), "rated_power_kw": Decimal(10**9)}
    )
    bounds = sorted({0, *[c for c in cuts if c < t_ms / 1000], int(t_ms / 1000) + 1})
    records = [
        run(rs, a, b, meter, gap_s=gap_s, point=point) for a, b in itertools.pairwise(bounds)
    ]
    assert sum(r.quantity for r in records) == Decimal(energy[-1]) / 100
    for (a, b), rec in zip(itertools.pairwise(bounds), records, strict=True):
        crossing = [
            energy[i + 1] - energy[i]
            for i, (x, y) in enumerate(itertools.pairwise(rs))
            if x.ts_ns < T0 + b * NS and y.ts_ns > T0 + a * NS
        ]
        assert 0 <= rec.quantity <= Decimal(sum(crossing)) / 100
    for left, right in itertools.pairwise(records):
        assert left.end == right.start


def test_two_readings_of_the_same_instant_on_a_boundary_are_both_counted():
    """Both belong to the period that ends there; the later period starts from the last."""
    rs = [reading(t, v) for t, v in [(8, "10.00"), (10, "11.00"), (10, "11.50"), (12, "12.00")]]
    first, second = run(rs, 0, 10), run(rs, 10, 20)
    assert first.quantity == Decimal("1.50")
    assert second.quantity == Decimal("0.50")
    assert first.end == second.start


def test_register_values_with_many_digits_add_up_exactly():
    """float64 registers decode to ~27 significant digits; no sum may round them."""
    a, b, c = "12345.60000000000036379788071", "12349.34399999999947613105178", "12360.5"
    rs = [reading(-1, a), reading(1, b), reading(3, c)]
    parts = [run(rs, -2, 0), run(rs, 0, 2), run(rs, 2, 4)]
    assert sum(r.quantity for r in parts) == Decimal(c) - Decimal(a)
