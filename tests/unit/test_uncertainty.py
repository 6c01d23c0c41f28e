"""Uncertainty of activity figures: the worked example of docs/metrology.md recomputed from a
month of 15-minute records, and the combination rules (linear for one meter's systematic
error, only outer boundaries for consecutive periods, root-sum-square across meters)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.activity.aggregation import PeriodInput, aggregate
from gateway.activity.counters import CONTEXT
from gateway.metrology.uncertainty import of_independent, of_point, relative_systematic
from gateway.models import CalibrationRecord, Carrier, Meter, Uncertainty
from gateway.periods import NS, Interval, datetime_to_ns
from tests.unit.test_aggregation import POINT, SH, reading, run

METER = Meter(
    id="M1",
    serial="S",
    model="m",
    carrier=Carrier.ELECTRICITY,
    accuracy_class="0.5S",
    calibrations=(
        CalibrationRecord(
            certificate_no="C",
            lab="lab",
            calibration_date=date(2026, 1, 1),
            due_date=date(2027, 1, 1),
        ),
    ),
)


def test_the_worked_example_a_month_of_15_minute_periods_of_a_class_05s_meter():
    """docs/metrology.md, "Worked example": November 2026, a reading on every boundary, the
    counter advancing 2.50 kWh per 15 minutes: 7200.00 kWh, U = 41.57 kWh (k = 2)."""
    start = datetime(2026, 11, 1, tzinfo=SH)
    n = 30 * 96
    t0 = datetime_to_ns(start)
    base = datetime_to_ns(datetime(2026, 11, 25, 10, 0, tzinfo=SH))  # where reading() counts from
    rs = [
        reading((t0 - base) / NS + i * 900, f"{1000 + Decimal('2.50') * i:.2f}")
        for i in range(n + 1)
    ]
    records = [
        aggregate(
            PeriodInput(
                uscc="91350100M000100Y43",
                gateway_id="gw",
                meter=METER,
                point=POINT,
                interval=Interval.parse("15min"),
                start_ns=t0 + i * 900 * NS,
                end_ns=t0 + (i + 1) * 900 * NS,
                before=rs[max(0, i - CONTEXT) : i],
                readings=[rs[i]],
                after=rs[i + 1 : i + 1 + CONTEXT],
                gap_limit_ns=1800 * NS,
                tz=SH,
            )
        )
        for i in range(n)
    ]
    assert records[-1].period_end == start + timedelta(days=30)
    total = sum(r.quantity for r in records)
    assert total == Decimal("7200.00")
    one = records[0].uncertainty
    assert one is not None
    assert one.basis == "class 0.5S: MPE 0.5 % (rectangular)"
    assert one.u_systematic == Decimal("0.007216878365")  # 2.50 x 0.005 / sqrt(3)
    assert one.u_start == Decimal("0.002886751346")  # 0.01 / sqrt(12)
    u_c = of_point(records)
    assert u_c is not None
    assert round(2 * u_c, 2) == Decimal("41.57")  # 0.577 % of 7200 kWh
    # not the root-sum-square of the periods, which would understate it 54-fold
    rss = of_independent(r.uncertainty.u_systematic for r in records if r.uncertainty)
    assert round(2 * rss, 2) == Decimal("0.77")


def test_a_certificates_stated_uncertainty_replaces_the_class():
    cert = METER.calibrations[0].model_copy(
        update={"expanded_uncertainty": "0.2 %", "coverage_factor": 2.0}
    )
    relative, basis = relative_systematic(Carrier.ELECTRICITY, "0.5S", cert)
    assert relative == Decimal("0.001")
    assert basis == "certificate C: U = 0.2 %, k = 2.0"
    assert relative_systematic(Carrier.NATURAL_GAS, "1.5", None)[0] is None  # no table: none


BASE_RECORD = run([reading(-1, "1.00"), reading(1, "2.00")], 0, 2)


def rec(e: Decimal, start: int, end: int, u_start: Decimal, u_end: Decimal, rel: Decimal):
    return BASE_RECORD.model_copy(
        update={
            "quantity": e,
            "period_start": datetime(2026, 11, 1, tzinfo=SH) + timedelta(hours=start),
            "period_end": datetime(2026, 11, 1, tzinfo=SH) + timedelta(hours=end),
            "uncertainty": Uncertainty(
                u_systematic=e * rel,
                u_start=u_start,
                u_end=u_end,
                expanded=Decimal(0),
                k=Decimal(2),
                basis="test",
            ),
        }
    )


@given(
    energies=st.lists(st.integers(0, 10**6), min_size=1, max_size=30),
    boundaries=st.lists(st.integers(0, 1000), min_size=31, max_size=31),
    rel=st.integers(1, 100),
)
def test_one_meters_periods_add_linearly_and_inner_boundaries_cancel(energies, boundaries, rel):
    r = Decimal(rel) / 10000
    bu = [Decimal(b) / 1000 for b in boundaries]
    records = [rec(Decimal(e), i, i + 1, bu[i], bu[i + 1], r) for i, e in enumerate(energies)]
    total = sum(Decimal(e) for e in energies)
    expected = ((total * r) ** 2 + bu[0] ** 2 + bu[len(energies)] ** 2).sqrt()
    assert abs(of_point(records) - expected) <= Decimal("1e-20") * (1 + expected)
    # a gap between periods: both sides of it count
    if len(records) > 2:
        later = records[1].period_start + timedelta(minutes=1)
        split = [records[0], records[1].model_copy(update={"period_start": later}), *records[2:]]
        assert of_point(split) >= of_point(records)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_independent_meters_combine_by_root_sum_square(us):
    values = [Decimal(u) for u in us]
    combined = of_independent(values)
    assert abs(combined - sum(v * v for v in values).sqrt()) <= Decimal("1e-20") * (1 + combined)
    assert combined <= sum(values)


def test_a_float_registers_resolution_is_its_spacing_at_that_value():
    from collectors.modbus import ModbusPoint
    from gateway.models import PointKind, Quantity

    f32 = ModbusPoint(
        quantity=Quantity.ACTIVE_ENERGY_IMPORT,
        kind=PointKind.COUNTER,
        unit="kWh",
        address=0,
        data_type="float32",
    )
    assert f32.resolution(Decimal("123456.7")) == Decimal(1) / 128  # 2**16 * 2**-23
    assert f32.resolution(Decimal("1.5")) == Decimal(2) ** -23
    u32 = f32.model_copy(update={"data_type": "uint32", "scale": Decimal("0.01")})
    assert u32.resolution(Decimal("123456.78")) == Decimal("0.01")


def test_a_certificates_correction_is_applied_and_the_indication_kept():
    corrected = METER.model_copy(
        update={
            "calibrations": (
                METER.calibrations[0].model_copy(
                    update={
                        "correction_percent": Decimal("-0.12"),
                        "expanded_uncertainty": "0.2 %",
                        "coverage_factor": 2.0,
                    }
                ),
            )
        }
    )
    record = run(
        [reading(0, "100.00"), reading(1, "110.00"), reading(2, "120.00")], 0, 2, corrected
    )
    assert record.indicated_quantity == Decimal("20.00")
    assert record.correction_percent == Decimal("-0.12")
    assert record.quantity == Decimal("20.00") * Decimal("0.9988")  # reads 0.12 % high
    assert record.uncertainty is not None
    assert record.uncertainty.u_systematic == record.quantity * Decimal("0.001")
    plain = run([reading(0, "100.00"), reading(1, "110.00"), reading(2, "120.00")], 0, 2, METER)
    assert (plain.indicated_quantity, plain.correction_percent) == (None, None)


def corrected_meter(*certs: CalibrationRecord) -> Meter:
    return METER.model_copy(update={"calibrations": certs})


def test_data_quality_shares_stay_shares_under_a_correction():
    """All of a period's energy interpolated, with a negative correction: the shares are of
    the counter's advance, not of the corrected figure (they once exceeded 1)."""
    c = METER.calibrations[0].model_copy(update={"correction_percent": Decimal("-0.12")})
    record = run(
        [reading(-10, "100.00"), reading(10, "110.00")], 0, 2, corrected_meter(c), gap_s=60
    )
    dq = record.data_quality
    assert dq is not None
    assert (dq.interpolated_share, dq.measured_share) == (Decimal(1), Decimal(0))


def test_production_counts_are_never_corrected():
    from gateway.models import PointKind, Quantity

    c = METER.calibrations[0].model_copy(update={"correction_percent": Decimal("-0.12")})
    units = POINT.model_copy(
        update={"quantity": Quantity.PRODUCTION_COUNT, "unit": "unit", "kind": PointKind.COUNTER}
    )
    record = run(
        [reading(0, "10"), reading(1, "15"), reading(2, "20")],
        0,
        2,
        corrected_meter(c),
        point=units,
    )
    assert record.quantity == Decimal(10)
    assert record.correction_percent is None


def test_a_recalibration_inside_a_period_corrects_each_part_by_its_own_certificate():
    """A day split at midnight: the counter advances 10.00 kWh before and 10.00 after; the
    old certificate says -1 %, the new one nothing."""
    old = CalibrationRecord(
        certificate_no="OLD",
        lab="lab",
        calibration_date=date(2026, 1, 1),
        due_date=date(2026, 11, 24),
        correction_percent=Decimal("-1"),
    )
    new = CalibrationRecord(
        certificate_no="NEW",
        lab="lab",
        calibration_date=date(2026, 11, 25),
        due_date=date(2027, 11, 24),
    )
    midnight = -10 * 3600  # 2026-11-25 00:00 in seconds from T0 (10:00 that day)
    rs = [
        reading(midnight - 3600, "100.00"),
        reading(midnight, "110.00"),
        reading(midnight + 3600, "120.00"),
    ]
    record = run(rs, midnight - 3600, midnight + 3600, corrected_meter(old, new))
    assert record.indicated_quantity == Decimal("20.00")
    assert record.quantity == Decimal("10.00") * Decimal("0.99") + Decimal("10.00")
    assert record.correction_percent is None
