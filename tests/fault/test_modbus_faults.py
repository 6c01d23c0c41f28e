"""Each Modbus fault on one meter, with other meters polled beside it: the faulty one gets bad
readings with the right reason (or its point disabled), the others keep their schedule.

Real servers on loopback sockets (the simulator, and a raw misbehaving server for frames
pymodbus' server cannot produce); RTU runs over a virtual serial line at 9600 baud.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from collectors import Collector, Shared, create_collector
from collectors.modbus import ModbusRtuOverTcpDevice, ModbusTcpDevice
from gateway.cli.demo_site import free_port_range
from gateway.models import QualityStatus, Reading
from simulators.modbus_fleet import FaultKind, MeterFleet
from tests.support.evil_modbus import WRONG_COUNT_ADDRESS, EvilServer
from tests.support.modbus import FAST, device_for

INTERVAL = FAST["poll_interval_s"]
POINTS = ["active_energy_import", "active_power", "status"]


@dataclass
class Run:
    cycles: dict[str, list[tuple[float, list[Reading]]]] = field(default_factory=dict)

    def readings(self, meter_id: str) -> list[Reading]:
        return [r for _, rs in self.cycles[meter_id] for r in rs]

    def reasons(self, meter_id: str) -> set[str | None]:
        return {r.quality.reason for r in self.readings(meter_id)}


async def side_by_side(collectors: list[Collector], seconds: float, during=None) -> Run:
    """Stream every collector concurrently (as the gateway does) for `seconds`."""
    run = Run({c.meter_id: [] for c in collectors})

    async def consume(c: Collector) -> None:
        async for readings in c.stream():
            run.cycles[c.meter_id].append((time.monotonic(), readings))

    tasks = [asyncio.create_task(consume(c)) for c in collectors]
    if during is not None:
        await during()
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    # a collector that does not stop when cancelled fails here, by name, not as a hung test
    done, still = await asyncio.wait(tasks, timeout=10)
    assert not still, [c.meter_id for c, t in zip(collectors, tasks, strict=True) if t in still]
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]  # a collector failed before the stop
    return run


def assert_kept_schedule(run: Run, c: Collector, seconds: float, interval: float = INTERVAL):
    """Every cycle on time: none overran, none missing, no gap between cycles beyond one
    interval plus scheduling noise, and every reading good."""
    starts = [t for t, _ in run.cycles[c.meter_id]]
    assert c.stats.overruns == 0
    assert len(starts) >= int(seconds / interval) - 1, len(starts)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < interval * 1.5, gaps
    assert run.reasons(c.meter_id) == {None}


async def test_silent_meter_times_out_with_bounded_retries_and_backs_off():
    base = free_port_range(2)
    async with MeterFleet(2, base) as fleet:
        faulty, healthy = (create_collector(f"M{i}", device_for(fleet, i, POINTS)) for i in (0, 1))
        fleet.inject(0, FaultKind.SILENT)
        run = await side_by_side([faulty, healthy], 4.0)
    assert_kept_schedule(run, healthy, 4.0)
    assert "timeout" in run.reasons("M0")
    assert run.reasons("M0") <= {"timeout", "not-polled-after-timeout", "connect-failed"}
    # each failed request was tried 1 + retries times, and the meter backed off between cycles
    assert faulty.stats.retries >= 1
    assert faulty.stats.timeouts == faulty.stats.retries + len(
        [1 for _, rs in run.cycles["M0"] if any(r.quality.reason == "timeout" for r in rs)]
    )
    # cycles take 2 x 0.3 s of timeouts; without backoff the next would start at the next
    # 0.2 s tick, with it (doubling from 0.1 s to 0.4 s, +-20 %) 0.32-0.48 s later
    ends = [t for t, _ in run.cycles["M0"]]
    assert ends[-1] - ends[-2] >= 0.6 + 0.3


async def test_slow_meter_overruns_are_counted_and_skipped_not_queued():
    base = free_port_range(2)
    async with MeterFleet(2, base) as fleet:
        slow, healthy = (create_collector(f"M{i}", device_for(fleet, i, POINTS)) for i in (0, 1))
        fleet.inject(0, FaultKind.SLOW, delay_s=0.25)  # within the timeout, past the interval
        run = await side_by_side([slow, healthy], 3.0)
    assert_kept_schedule(run, healthy, 3.0)
    assert run.reasons("M0") == {None}  # slow answers are still good answers
    assert slow.stats.overruns >= 5
    # skipped, not queued: each cycle starts on the grid after the previous one ended, so
    # cycles + skipped starts cover the run (less the first cycle's, which is off the grid,
    # and the one cut short at the end)
    assert slow.stats.cycles + slow.stats.overruns >= int(3.0 / INTERVAL) - 2
    assert len(run.cycles["M0"]) <= 3.0 / 0.25 + 1


async def test_illegal_address_disables_only_that_point_and_reports_it():
    base = free_port_range(2)
    async with MeterFleet(2, base) as fleet:
        bad = device_for(fleet, 0, POINTS)
        unmapped = bad.points[0].model_copy(update={"name": "not-there", "address": 9})
        bad = bad.model_copy(update={"points": (*bad.points, unmapped)})
        faulty = create_collector("M0", bad)
        healthy = create_collector("M1", device_for(fleet, 1, POINTS))
        run = await side_by_side([faulty, healthy], 2.0)
    assert_kept_schedule(run, healthy, 2.0)
    assert faulty.stats.disabled_points == ["not-there"]
    # and says when it asks again: a minute later by default
    (retry_at,) = faulty.stats.disabled_retry_at.values()
    assert time.time() + 50 < retry_at < time.time() + 61
    refused = [r for r in run.readings("M0") if r.point == "not-there"]
    assert [r.quality.reason for r in refused] == ["modbus-exception-illegal-address"]  # once
    others = [r for r in run.readings("M0") if r.point != "not-there"]
    assert others
    assert all(r.quality.status is QualityStatus.GOOD for r in others)


async def test_busy_meter_is_retried_and_recovers():
    base = free_port_range(2)
    async with MeterFleet(2, base) as fleet:
        busy, healthy = (create_collector(f"M{i}", device_for(fleet, i, POINTS)) for i in (0, 1))

        async def busy_for_a_while() -> None:
            fleet.inject(0, FaultKind.BUSY)
            await asyncio.sleep(0.6)
            fleet.inject(0, FaultKind.CLEAR)

        run = await side_by_side([busy, healthy], 1.5, during=busy_for_a_while)
    assert_kept_schedule(run, healthy, 2.1)
    assert busy.stats.retries >= 1
    assert busy.stats.exceptions["modbus-exception-device-busy"] >= 2
    assert "modbus-exception-device-busy" in run.reasons("M0")
    last = run.cycles["M0"][-1][1]
    assert all(r.quality.status is QualityStatus.GOOD for r in last)


async def test_refused_connection_backs_off_with_jitter_and_reconnects():
    base = free_port_range(2)
    async with MeterFleet(1, base) as fleet:
        healthy = create_collector("M1", device_for(fleet, 0, POINTS))
        dead = create_collector(
            "M0",
            device_for(fleet, 0, POINTS).model_copy(
                update={
                    "connection": device_for(fleet, 0).connection.model_copy(
                        update={"port": base + 1}
                    )
                }
            ),
        )
        run = await side_by_side([dead, healthy], 2.0)
    assert_kept_schedule(run, healthy, 2.0)
    assert run.reasons("M0") == {"connect-failed"}
    # backoff (0.1 s doubling to 0.4 s, +-20 % jitter) spaces the attempts out, where the poll
    # interval alone would try every 0.2 s
    ends = [t for t, _ in run.cycles["M0"]]
    assert min(b - a for a, b in itertools.pairwise(ends[-3:])) >= 0.4 * 0.8 - 0.01


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "garbled-response"),
        ("truncated", "garbled-response"),
        ("wrong-count", "short-response"),
        ("wrong-tid-first", None),  # the stale answer is discarded, the real one used
        ("bad-crc", "timeout"),  # RTU over TCP: a frame with a bad CRC is dropped
    ],
)
async def test_malformed_answers_are_rejected_and_others_keep_schedule(mode, reason):
    base = free_port_range(2)
    model = ModbusRtuOverTcpDevice if mode == "bad-crc" else ModbusTcpDevice
    evil = model.model_validate(
        {
            "connection": {**FAST, "host": "127.0.0.1", "port": base + 1},
            "points": [
                {
                    "quantity": "active_power",
                    "kind": "gauge",
                    "unit": "kW",
                    "address": 5,
                    "data_type": "uint32",
                },
            ],
        }
    )
    async with MeterFleet(1, base) as fleet, EvilServer(base + 1, mode):
        healthy = create_collector("M1", device_for(fleet, 0, POINTS))
        faulty = create_collector("M0", evil)
        run = await side_by_side([faulty, healthy], 2.0)
    assert_kept_schedule(run, healthy, 2.0)
    readings = run.readings("M0")
    if reason is None:
        assert {r.quality.reason for r in readings} == {None}
        # registers 5-6 hold 1005, 1006: never the stale answer's 0x0BAD words
        assert {r.value for r in readings} == {1005 * 65536 + 1006}
    else:
        assert reason in {r.quality.reason for r in readings}
        assert all(r.value is None for r in readings)


async def test_an_answer_that_does_not_fit_spoils_only_its_request():
    port = free_port_range(1)
    device = ModbusTcpDevice.model_validate(
        {
            "connection": {**FAST, "host": "127.0.0.1", "port": port},
            "points": [
                {
                    "name": "spoilt",
                    "quantity": "status",
                    "kind": "gauge",
                    "unit": "1",
                    "address": WRONG_COUNT_ADDRESS,
                    "data_type": "uint32",
                },
                {
                    "name": "fine",
                    "quantity": "status",
                    "kind": "gauge",
                    "unit": "1",
                    "address": 100,
                    "data_type": "uint16",
                },
            ],
        }
    )
    async with EvilServer(port, "wrong-count"):
        collector = create_collector("M0", device)
        readings = {r.point: r for r in await collector.poll_once()}  # type: ignore[attr-defined]
    assert readings["spoilt"].quality.reason == "short-response"
    assert readings["fine"].value == 1100  # the next request was still sent and used
    assert collector.stats.bad_responses == {"short-response": 1}
    assert collector._backoff_s == 0  # type: ignore[attr-defined]


async def test_a_request_refused_twice_is_cut_until_every_point_is_read_once():
    """Points 2, 6, 10, 14 (uint16), at most 10 registers a request: 2..10 spans the
    simulator's unmapped register 9 and is refused; after the cut, 6..14 joins a point of the
    next request and is refused too. The cycle still reads each point exactly once."""
    async with MeterFleet(1, free_port_range(1)) as fleet:
        points = [
            {
                "name": f"r{a}",
                "quantity": "status",
                "kind": "gauge",
                "unit": "1",
                "address": a,
                "data_type": "uint16",
            }
            for a in (2, 6, 10, 14)
        ]
        device = ModbusTcpDevice.model_validate(
            {
                "connection": {**FAST, "host": "127.0.0.1", "port": fleet.port_of(0)},
                "points": points,
                "max_registers_per_request": 10,
                "max_gap": 8,
            }
        )
        collector = create_collector("M0", device)
        first = await collector.poll_once()  # type: ignore[attr-defined]
        second = await collector.poll_once()  # type: ignore[attr-defined]
    assert sorted(r.point for r in first) == ["r10", "r14", "r2", "r6"]
    assert all(r.quality.status is QualityStatus.GOOD for r in first + second)
    assert collector.stats.exceptions == {"modbus-exception-illegal-address": 2}  # type: ignore[attr-defined]
    assert collector.stats.disabled_points == []  # type: ignore[attr-defined]


async def test_dead_unit_on_a_shared_rtu_line_leaves_the_others_on_schedule():
    async with MeterFleet(2, transport="rtu", units_per_link=2) as fleet:
        shared = Shared()
        slow_line = {"poll_interval_s": 1.0, "timeout_s": 0.2, "backoff_max_s": 2.0}
        dead, healthy = (
            create_collector(f"M{i}", device_for(fleet, i, POINTS, **slow_line), shared=shared)
            for i in (0, 1)
        )
        fleet.inject(0, FaultKind.SILENT)
        run = await side_by_side([dead, healthy], 5.0)
        shared.close()
    assert_kept_schedule(run, healthy, 5.0, interval=1.0)
    assert run.readings("M0")
    assert run.reasons("M0") <= {"timeout", "not-polled-after-timeout"}
    assert dead.link is healthy.link  # type: ignore[attr-defined]


def retrying(device, initial_s: float, max_s: float):
    return device.model_copy(
        update={"disabled_retry_initial_s": initial_s, "disabled_retry_max_s": max_s}
    )


async def test_a_meter_that_refused_everything_for_a_while_gets_its_points_back():
    """A spell of exception 01 (illegal function) to every request, e.g. while a meter starts,
    used to disable every point for good. Now each is asked again on a backoff, and once the
    meter answers, its points are read again, joined into as few requests as before."""
    from collectors.modbus.plan import plan_device

    base = free_port_range(2)
    seen: dict[str, object] = {}
    async with MeterFleet(2, base) as fleet:
        device = retrying(device_for(fleet, 0, POINTS), 0.3, 0.6)
        faulty = create_collector("M0", device)
        healthy = create_collector("M1", device_for(fleet, 1, POINTS))
        fleet.inject(0, FaultKind.EXCEPTION, code=1)

        async def refuse_then_heal() -> None:
            await asyncio.sleep(1.5)
            seen["disabled"] = sorted(faulty.stats.disabled_points)
            seen["retry_at"] = dict(faulty.stats.disabled_retry_at)
            seen["healed_at"] = time.time_ns()
            fleet.inject(0, FaultKind.CLEAR)

        run = await side_by_side([faulty, healthy], 3.0, during=refuse_then_heal)
    assert_kept_schedule(run, healthy, 4.5)
    assert seen["disabled"] == sorted(POINTS)  # the spell disabled them all
    assert set(seen["retry_at"]) == set(POINTS)  # type: ignore[call-overload]
    readings = run.readings("M0")
    refused = [r for r in readings if r.quality.reason == "modbus-exception-illegal-function"]
    # asked again while refused: more than the one refusal per point that disabled it
    assert len(refused) > len(POINTS)
    after = [r for r in readings if r.ts_ns > seen["healed_at"]]  # type: ignore[operator]
    back = {r.point for r in after if r.quality.status is QualityStatus.GOOD}
    assert back == set(POINTS)
    assert faulty.stats.disabled_points == []
    assert faulty.stats.disabled_retry_at == {}
    assert faulty.requests == plan_device(device)  # type: ignore[attr-defined]
    last = run.cycles["M0"][-1][1]
    assert {r.point for r in last} == set(POINTS)
    assert all(r.quality.status is QualityStatus.GOOD for r in last)


async def test_a_point_the_meter_keeps_refusing_is_asked_less_and_less_often():
    base = free_port_range(1)
    async with MeterFleet(1, base) as fleet:
        device = retrying(device_for(fleet, 0, POINTS), 0.2, 0.8)
        unmapped = device.points[0].model_copy(update={"name": "not-there", "address": 9})
        faulty = create_collector(
            "M0", device.model_copy(update={"points": (*device.points, unmapped)})
        )
        run = await side_by_side([faulty], 3.0)
    refused = [r.ts_ns for r in run.readings("M0") if r.point == "not-there"]
    assert len(refused) >= 4
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(refused)]
    # never sooner than the backoff: 0.2, 0.4, then 0.8 s (the maximum) from then on
    for gap, least in zip(gaps, [0.2, 0.4, 0.8, 0.8, 0.8, 0.8], strict=False):
        assert gap >= least * 0.95, gaps
    assert faulty.stats.disabled_points == ["not-there"]
    others = [r for r in run.readings("M0") if r.point != "not-there"]
    assert all(r.quality.status is QualityStatus.GOOD for r in others)
