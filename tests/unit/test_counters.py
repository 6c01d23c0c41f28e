"""Counters that cannot invent energy: glitched readings set aside, implausible steps not
counted (gateway/activity/counters.py), through the same aggregation the gateway runs."""

from __future__ import annotations

import itertools
import struct
from decimal import Decimal, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.activity.counters import EXACT, RADIUS
from gateway.models import ActivityFlag
from tests.unit.test_aggregation import METER, POINT, reading, run

UINT32_TOP = Decimal(2**32 - 1) / 100  # 0xFFFFFFFF on a 0.01 kWh register
FLOAT64 = POINT.model_copy(update={"data_type": "float64", "scale": Decimal(1)})
UINT16 = POINT.model_copy(update={"data_type": "uint16"})  # 0.01 kWh, wraps at 655.36 kWh


def trace(values: list[str | None], dt: float = 1.0) -> list:
    return [reading(i * dt, v) for i, v in enumerate(values)]


def ramp(start: str, n: int, step: str = "0.01") -> list[str]:
    return [str(Decimal(start) + i * Decimal(step)) for i in range(n)]


def test_a_single_dip_to_zero_books_nothing_extra():
    """Issue 15: one reading of 0 between 1000.00 and 1000.05 booked 1000.05 kWh."""
    values = ramp("1000.00", 10)
    values[5] = "0"
    rec = run(trace(values), 0, 10)
    assert rec.quantity == Decimal("0.09")  # 1000.00 -> 1000.09, the dip set aside
    assert rec.bad_reading_count == 1
    assert ActivityFlag.BAD_READINGS in rec.flags
    assert ActivityFlag.COUNTER_BACKWARDS not in rec.flags
    assert rec.coverage == run(trace(ramp("1000.00", 10)), 0, 10).coverage  # none unmeasured


def test_a_spike_to_the_register_maximum_is_not_a_rollover():
    """Issue 15: a brief 0xFFFFFFFF was counted up, then again as a rollover (+4.29e7 kWh)."""
    values = ramp("1000.00", 10)
    values[4] = str(UINT32_TOP)
    rec = run(trace(values), 0, 10)
    assert rec.quantity == Decimal("0.09")
    assert ActivityFlag.ROLLOVER not in rec.flags
    assert rec.bad_reading_count == 1


def test_a_float_spike_of_1e12_is_set_aside():
    values = ramp("18.25", 10)
    values[6] = "1000000000000"
    rec = run(trace(values), 0, 10, point=FLOAT64)
    assert rec.quantity == Decimal("0.09")


def test_two_consecutive_glitches_are_set_aside():
    for a, b in [("0", "0"), ("0", str(UINT32_TOP)), (str(UINT32_TOP), "1000.01"), ("5", "7")]:
        values = ramp("1000.00", 12)
        values[5], values[6] = a, b
        rec = run(trace(values), 0, 12)
        assert rec.quantity == Decimal("0.11"), (a, b)


def test_a_glitch_at_a_period_boundary_gives_the_same_boundary_to_both_periods():
    values = ramp("1000.00", 20, "0.05")
    values[10] = "0"  # the first reading of the second period
    first, second = run(trace(values), 0, 10), run(trace(values), 10, 20)
    assert first.end == second.start
    assert first.quantity + second.quantity == Decimal("0.95")


def test_a_real_rollover_is_still_counted():
    top = Decimal(2**32) / 100
    values = [str(top - Decimal("0.05") + i * Decimal("0.02")) for i in range(3)]
    values += [str((top - Decimal("0.05") + i * Decimal("0.02")) % top) for i in range(3, 10)]
    rec = run(trace(values), 0, 10)
    assert rec.quantity == Decimal("0.18")
    assert ActivityFlag.ROLLOVER in rec.flags


def test_a_wrap_far_from_the_maximum_is_not_a_rollover():
    """A 16-bit register at 400 kWh reading 10 kWh next, and staying there: not a rollover of
    265 kWh in a second (the neighbouring steps are 0.01 kWh), but a counter gone back."""
    values = ramp("400.00", 5) + ramp("10.00", 5)
    rec = run(trace(values), 0, 10, point=UINT16)
    assert rec.quantity == Decimal("0.08")  # 0.04 before and 0.04 after, nothing between
    assert ActivityFlag.ROLLOVER not in rec.flags
    assert ActivityFlag.COUNTER_BACKWARDS in rec.flags
    assert rec.coverage < 1  # the second it went back is unmeasured


def test_a_counter_reset_is_backwards_and_its_step_unmeasured():
    values = ramp("500.00", 5) + ramp("0.00", 5)
    first, second = run(trace(values), 0, 4.5), run(trace(values), 4.5, 10)
    assert first.end.value is None  # the counter between 500.04 and 0.00: not known
    assert first.end == second.start
    rec = run(trace(values), 0, 10)
    assert rec.quantity == Decimal("0.08")
    assert ActivityFlag.COUNTER_BACKWARDS in rec.flags
    assert ActivityFlag.GAP in rec.flags
    assert rec.coverage == 0.8  # 0-9 s measured, less the second it went back


def test_a_jump_that_stays_is_implausible_from_the_meters_own_rate():
    """No rated power configured: a step 100x the meter's recent rate is not counted."""
    values = ramp("1000.00", 5) + ramp("51000.00", 5)
    rec = run(trace(values), 0, 10)
    assert rec.quantity == Decimal("0.08")
    assert ActivityFlag.IMPLAUSIBLE_STEP in rec.flags
    assert rec.coverage == 0.8


def test_a_machine_starting_after_idle_is_counted_in_full():
    """From 0 kW to 360 kW (0.1 kWh a second): the steps after the start vouch for it."""
    values = ["1000.00"] * 5 + ramp("1000.10", 6, "0.10")
    rec = run(trace(values), 0, 11)
    assert rec.quantity == Decimal("0.60")
    assert ActivityFlag.IMPLAUSIBLE_STEP not in rec.flags


def test_with_rated_power_a_register_tick_is_never_implausible():
    """A 10 kW meter read every second advances 0.0028 kWh a second: its 0.01 kWh register
    ticks once in a few seconds, a step larger than rated power x time; still plausible."""
    rated = METER.model_copy(update={"rated_power_kw": Decimal(10)})
    values = ["1000.00", "1000.00", "1000.01", "1000.01", "1000.01", "1000.02"]
    rec = run(trace(values), 0, 6, meter=rated)
    assert rec.quantity == Decimal("0.02")
    assert ActivityFlag.IMPLAUSIBLE_STEP not in rec.flags


# --- property: any glitches, never more energy than the counter advanced --------------------

FORMATS = {
    "uint32": (POINT, 32),
    "uint16": (UINT16, 16),  # wraps every 655.36 kWh: rollovers in most traces
    "float64": (FLOAT64, None),
}
GLITCHES = ["dip-zero", "dip", "spike-top", "spike", "bit-flip", "nan", "stuck"]


def _glitched(kind: str, true: Decimal, fmt: str, draw: st.DataObject) -> str | None:
    """What a glitched read of a register holding `true` shows (None: a bad reading)."""
    point, bits = FORMATS[fmt]
    if kind == "nan":
        return None
    if bits is None:  # float64
        if kind == "dip-zero":
            return "0"
        if kind == "spike-top":
            return "1E12"
        if kind in ("dip", "spike"):
            factor = draw.draw(st.sampled_from(["0.5", "0.999", "1.001", "3", "1E6"]))
            return str(true * Decimal(factor))
        packed = struct.unpack(">Q", struct.pack(">d", float(true)))[0]
        flipped = struct.unpack(
            ">d", struct.pack(">Q", packed ^ (1 << draw.draw(st.integers(0, 63))))
        )[0]
        return None if flipped != flipped or abs(flipped) == float("inf") else str(Decimal(flipped))
    raw = int(true / point.scale)
    top = 2**bits - 1
    if kind == "dip-zero":
        raw = 0
    elif kind == "spike-top":
        raw = top
    elif kind == "dip":
        raw = draw.draw(st.integers(0, max(0, raw - 1)))
    elif kind == "spike":
        raw = draw.draw(st.integers(min(top, raw + 2), top))
    else:
        raw ^= 1 << draw.draw(st.integers(0, bits - 1))
    return str(Decimal(raw) * point.scale)


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    segments=st.lists(
        st.tuples(st.integers(4, 12), st.sampled_from([0, 1, 10, 100, 3600, 36000])),
        min_size=2,
        max_size=8,
    ),
    start=st.integers(0, 65535),
    data=st.data(),
)
def test_glitches_never_book_energy_the_counter_did_not_advance(fmt, segments, start, data):
    """A meter's load runs in segments (4-12 polls at 0 to 360 kW, polls 1 s apart, register
    0.01 kWh; float64 registers hold the kWh to 0.001). Up to two consecutive readings at a
    time (at most two among any 2 x RADIUS + 1, none among the first and last RADIUS) are
    replaced by a glitch: a dip to 0 or lower, a spike to the register's maximum (1e12 for a
    float) or higher, a flipped bit (a float flipped to NaN/inf is a bad reading), NaN, or the
    last answer again (stuck). Whatever they are and wherever periods cut: no period books
    less than 0, neighbours agree on their shared boundary, and the total is the counter's
    true advance, plus at most one register step per period (the glitches add nothing and
    lose nothing)."""
    point, bits = FORMATS[fmt]
    modulus = Decimal(2**bits) * point.scale if bits else None
    true: list[Decimal] = []
    hundredths = Decimal(start)  # register units of 0.01 kWh (x1000 for a float: 0.001 kWh)
    fine = Decimal(0)
    for n, rate in segments:
        for _ in range(n):
            true.append(hundredths)
            fine += rate  # in 1/10000 of a register unit per second
            hundredths += fine // 10000
            fine %= 10000

    def shown(units: Decimal) -> Decimal:
        if bits is None:
            return Decimal(float(units / 1000 + 1000))
        return (units * point.scale) % modulus if modulus else units * point.scale

    values: list[str | None] = [str(shown(u)) for u in true]
    n = len(values)
    k = RADIUS  # a glitch needs RADIUS good readings on either side to be told
    while k < n - RADIUS:
        if data.draw(st.integers(0, 3)) == 0:
            burst = data.draw(st.integers(1, 2))
            for i in range(k, min(k + burst, n - RADIUS)):
                kind = data.draw(st.sampled_from(GLITCHES))
                values[i] = (
                    values[i - 1]  # the meter repeats its last answer
                    if kind == "stuck"
                    else _glitched(kind, shown(true[i]), fmt, data)
                )
            k += burst + 2 * RADIUS - 1  # at most two glitched among 2 x RADIUS + 1
        else:
            k += 1
    rs = trace(values)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), max_size=6))))
    bounds = [0, *cuts, n]
    records = [run(rs, a, b, point=point) for a, b in itertools.pairwise(bounds)]
    with localcontext(EXACT):
        advance = shown(true[-1]) - shown(true[0])
        expected = advance + modulus if modulus and advance < 0 else advance
    # the true advance over a trace is below half the register, so taking it modulo is exact
    assert modulus is None or true[-1] - true[0] < 2**bits // 2
    assert all(r.quantity >= 0 for r in records)
    for left, right in itertools.pairwise(records):
        assert left.end == right.start
    # a glitch of one register step is ambiguous (a dip of the reading, or a spike of the one
    # before it?): it may book that one step
    tick = point.resolution(shown(true[-1]))
    assert tick is not None
    with localcontext(EXACT):  # float64 values have ~30 digits: add them without rounding
        total = sum(r.quantity for r in records)
        assert expected <= total <= expected + tick * len(records)


def test_glitches_among_readings_apart_by_more_than_the_gap_limit_book_nothing_extra():
    """Review of issue 15: every reading alone across a gap (a link that keeps dropping
    polls) left rule 1 nothing to compare; the gaps' own rates now bound the steps."""
    for glitch in ("0", str(UINT32_TOP)):
        values = ramp("1000.00", 12)
        values[6] = glitch
        rec = run(trace(values, dt=10), 0, 120, gap_s=3)
        assert rec.quantity <= Decimal("0.11")  # never more than the counter advanced
        assert ActivityFlag.ROLLOVER not in rec.flags


def test_a_point_max_rate_bounds_a_gas_counter():
    """Counters in other units than kWh take the point's max_rate_per_h (a gas meter's Qmax):
    a batch fill within it counts even from idle, a jump beyond it does not."""
    gas = POINT.model_copy(update={"max_rate_per_h": Decimal(3600)})  # 1 unit a second
    values = ["500.00"] * 5 + ["505.00"] * 5  # 5 units within one 1-second poll: too fast
    assert run(trace(values), 0, 10, point=gas).quantity == 0
    values = ["500.00"] * 5 + ["500.90"] * 5  # 0.9 in one second: within it
    assert run(trace(values), 0, 10, point=gas).quantity == Decimal("0.90")
