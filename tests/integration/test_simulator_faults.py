"""The simulator's faults, seen through the real collector, and scenario files."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest

from collectors import create_collector
from gateway.cli.demo_site import free_port_range
from gateway.models import Reading
from simulators.modbus_fleet import FaultKind, FleetJournal, MeterFleet, Scenario
from tests.support.modbus import device_for

POINTS = ["active_energy_import", "active_power", "active_energy_import_u64"]


def value(readings: list[Reading], point: str) -> Decimal | None:
    return next(r.value for r in readings if r.point == point)


async def test_frozen_counter_stands_still_then_catches_up():
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, POINTS))
        fleet.inject(0, FaultKind.FROZEN)
        first = value(await c.poll_once(), "active_energy_import_u64")  # type: ignore[attr-defined]
        await asyncio.sleep(1.2)
        still = value(await c.poll_once(), "active_energy_import_u64")  # type: ignore[attr-defined]
        fleet.inject(0, FaultKind.CLEAR)
        after = value(await c.poll_once(), "active_energy_import_u64")  # type: ignore[attr-defined]
    assert first == still  # ~40 kW for 1.2 s would have moved the Wh register
    assert after is not None
    assert still is not None
    assert after >= still


def test_a_frozen_counter_frozen_again_stays_where_it_stopped():
    """A second freeze changes nothing: the counter neither jumps to the energy passed since
    the first (it did: the missed energy booked at once) nor moves when cleared."""
    meter = MeterFleet(1, 5020, clock=lambda: 1_800_000_000.0).meters[0]
    meter.inject(FaultKind.FROZEN, 1_800_000_010.0)
    stopped = meter.counter_kwh(1_800_000_015.0)
    meter.inject(FaultKind.FROZEN, 1_800_000_020.0)  # ~40 kW for 10 s would be ~0.1 kWh
    assert meter.counter_kwh(1_800_000_025.0) == stopped
    meter.inject(FaultKind.CLEAR, 1_800_000_030.0)
    assert meter.counter_kwh(1_800_000_030.0) == pytest.approx(stopped, abs=1e-9)


async def test_rollover_wraps_the_32_bit_counter():
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, POINTS))
        fleet.inject(0, FaultKind.ROLLOVER, in_s=0.5)
        before = value(await c.poll_once(), "active_energy_import")  # type: ignore[attr-defined]
        await asyncio.sleep(1.0)
        after = value(await c.poll_once(), "active_energy_import")  # type: ignore[attr-defined]
    modulus = Decimal(2**32) * Decimal("0.01")
    assert before is not None
    assert after is not None
    assert modulus - 1 < before < modulus  # just below the top of the register
    assert after < 1  # wrapped to just above zero


async def test_replaced_meter_restarts_from_zero():
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, POINTS))
        old = value(await c.poll_once(), "active_energy_import")  # type: ignore[attr-defined]
        fleet.inject(0, FaultKind.REPLACED)
        new = value(await c.poll_once(), "active_energy_import")  # type: ignore[attr-defined]
    assert old is not None
    assert old > 10_000
    assert new is not None
    assert new < 1


async def test_read_glitches_book_no_energy_through_the_real_collector():
    """Issue 15: one glitched read of the energy counter (0, or 0xFFFFFFFF) booked the whole
    counter (12,345 kWh) or a rollover (4.29e7 kWh). Read over Modbus TCP from the simulated
    meter, glitched as a wire fault, aggregated as the gateway does: only the true advance."""
    from gateway.activity.aggregation import PeriodInput, aggregate
    from gateway.periods import Interval
    from tests.unit.test_aggregation import METER, SH

    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M1", device_for(fleet, 0, ["active_energy_import"]))
        polls = []
        for i in range(40):
            if i in (10, 20, 30):  # a dip to 0; two reads at the maximum; a dip again
                fleet.inject(0, FaultKind.GLITCH, reads=1 + (i == 20), top=int(i == 20))
            polls += await c.poll_once()  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
    counter = [r for r in polls if r.value is not None]
    top = Decimal(2**32 - 1) / 100
    glitched = [r for r in counter if r.value in (0, top)]
    assert len(glitched) == 4  # they reached the gateway as good readings
    record = aggregate(
        PeriodInput(
            uscc="91350100M000100Y43",
            gateway_id="gw",
            meter=METER,
            point=c.device.points[0],  # type: ignore[attr-defined]
            interval=Interval.parse("1s"),
            start_ns=counter[0].ts_ns,
            end_ns=counter[-1].ts_ns + 1,
            before=[],
            readings=counter,
            after=[],
            gap_limit_ns=10**10,
            tz=SH,
        )
    )
    assert counter[-1].value is not None
    assert counter[0].value is not None
    assert record.quantity == counter[-1].value - counter[0].value  # about 0.05 kWh
    assert record.bad_reading_count == 4


async def test_noise_moves_instantaneous_values_only():
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, ["active_power", "voltage_l1_n"]))
        fleet.inject(0, FaultKind.NOISE, level=0.05)
        volts = {value(await c.poll_once(), "voltage_l1_n") for _ in range(10)}  # type: ignore[attr-defined]
    assert len(volts) > 1
    assert all(v is not None and abs(v - 230) <= Decimal("11.6") for v in volts)


async def test_scenario_replays_faults_on_time(tmp_path: Path):
    path = tmp_path / "faults.toml"
    path.write_text(
        '[[events]]\nat_s = 0.3\nmeter = 0\nfault = "exception"\ncode = 4\nduration_s = 0.6\n'
    )
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, POINTS))
        fleet.play(Scenario.load(path))
        seen = []
        start = time.monotonic()
        while time.monotonic() - start < 1.5:
            seen.append({r.quality.reason for r in await c.poll_once()})  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)
    reasons = [next(iter(s)) for s in seen]
    assert reasons[0] is None  # before 0.3 s
    assert "modbus-exception-device-failure" in reasons  # during
    assert reasons[-1] is None  # cleared after 0.9 s


async def test_a_scenario_glitch_takes_its_reads_and_top(tmp_path: Path):
    """A glitch from a scenario file: two answers at the register's maximum, then the true
    counter again."""
    path = tmp_path / "glitch.toml"
    path.write_text('[[events]]\nat_s = 0\nmeter = 0\nfault = "glitch"\nreads = 2\ntop = true\n')
    async with MeterFleet(1, free_port_range(1)) as fleet:
        c = create_collector("M", device_for(fleet, 0, ["active_energy_import"]))
        fleet.play(Scenario.load(path))
        await asyncio.sleep(0.2)
        seen = [value(await c.poll_once(), "active_energy_import") for _ in range(3)]  # type: ignore[attr-defined]
    top = Decimal(2**32 - 1) / 100
    assert seen[:2] == [top, top]
    assert seen[2] is not None
    assert 12_345 <= seen[2] < 13_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[events]]\nat_s = 1\nmeter = 0\nfault = "melt"\n', "events.0.fault"),
        ('[[events]]\nat_s = -1\nmeter = 0\nfault = "busy"\n', "events.0.at_s"),
        ("[[events]\n", "not valid TOML"),
    ],
)
def test_bad_scenario_files_name_the_problem(tmp_path: Path, text: str, message: str):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Scenario.load(path)


async def test_journal_tells_another_process_every_counter(tmp_path: Path):
    """FleetJournal rebuilds the counters from the serving fleet's journal: at any instant
    before, between and after faults it says what the fleet's meters said then."""
    now = [1_800_000_000.0]
    journal = tmp_path / "meters.journal"
    async with MeterFleet(2, free_port_range(2), clock=lambda: now[0], journal=journal) as fleet:
        shown: list[tuple[int, float, float]] = []  # (meter, t, counter the fleet showed)

        def show(t: float) -> None:
            now[0] = t
            shown.extend((m.index, t, m.counter_kwh(t)) for m in fleet.meters)

        def inject(t: float, meter: int | Literal["all"], kind: FaultKind, **p: float) -> None:
            now[0] = t
            fleet.inject(meter, kind, **p)

        show(1_800_000_005.0)
        inject(1_800_000_010.0, 0, FaultKind.FROZEN)
        show(1_800_000_020.0)
        inject(1_800_000_030.0, 0, FaultKind.CLEAR)
        show(1_800_000_030.5)
        inject(1_800_000_031.0, "all", FaultKind.ROLLOVER, in_s=5)
        show(1_800_000_033.0)
        show(1_800_000_037.0)  # rolled over
        inject(1_800_000_040.0, 1, FaultKind.REPLACED)
        show(1_800_000_050.0)
    known = FleetJournal(journal)
    assert known.events == 4
    assert [(i, t, known.counter_kwh(i, t)) for i, t, _ in shown] == shown
    # the frozen span advanced nothing; the jumps are the rollover's and the replacement's
    assert known.counter_kwh(0, 1_800_000_029.0) == known.counter_kwh(0, 1_800_000_011.0)
    assert known.jumps_kwh(0, 1_800_000_000.0, 1_800_000_030.0) == 0
    rollover = known.jumps_kwh(1, 1_800_000_030.0, 1_800_000_031.0)
    assert 42_900_000 < rollover < 2**32 / 100  # to just below the 32-bit register's top
    replaced = known.jumps_kwh(1, 1_800_000_031.0, 1_800_000_040.0)
    assert replaced == pytest.approx(-known.counter_kwh(1, 1_800_000_039.999), abs=0.01)
