"""Every transport, data type and byte order against the real simulator (pymodbus servers over
loopback TCP, and RTU over a pseudo-terminal pair at 9600 baud)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from collectors import Shared, create_collector
from gateway.cli.demo_site import free_port_range
from gateway.models import QualityStatus, Reading
from simulators.modbus_fleet import POWER_FACTOR, FaultKind, MeterFleet
from tests.support.modbus import device_for


def by_point(readings: list[Reading]) -> dict[str, Reading]:
    return {r.point: r for r in readings}


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp", "rtu"])
async def test_every_type_and_order_decodes_on_every_transport(transport):
    base = free_port_range(1)
    async with MeterFleet(2, base, transport=transport, units_per_link=2) as fleet:
        shared = Shared()
        collectors = [
            create_collector(f"M{i}", device_for(fleet, i), shared=shared) for i in (0, 1)
        ]
        results = [await c.poll_once() for c in collectors]  # type: ignore[attr-defined]
        shared.close()
    for meter, readings in zip(fleet.meters, results, strict=True):
        r = by_point(readings)
        assert all(x.quality.status is QualityStatus.GOOD for x in readings), [
            (x.point, x.quality.reason) for x in readings if x.value is None
        ]
        t = r["active_energy_import"].ts_ns / 1e9
        kwh = Decimal(str(meter.counter_kwh(t)))
        # the same counter in six encodings: uint32 ABCD/CDAB x0.01, float32, uint64 ABCD/DCBA
        # in Wh, float64 (each read within the same cycle, so within a few ms of energy)
        assert r["active_energy_import"].value == r["active_energy_import_cdab"].value
        assert r["active_energy_import_u64"].value == r["active_energy_import_u64_dcba"].value
        for name, resolution in [
            ("active_energy_import", "0.02"),
            ("active_energy_import_u64", "0.01"),
            ("active_energy_import_f32", "0.01"),
            ("active_energy_import_f64", "0.01"),
        ]:
            assert abs(r[name].value - kwh) <= Decimal(resolution), name
        # raw words are kept: the uint32 counter is its 4 bytes times 0.01
        raw = r["active_energy_import"].raw
        assert int.from_bytes(raw, "big") * Decimal("0.01") == r["active_energy_import"].value
        assert r["active_energy_import_cdab"].raw == raw[2:] + raw[:2]
        power = meter.power_kw(t)
        for name in ("active_power", "active_power_badc", "active_power_w", "active_power_mw"):
            assert abs(float(r[name].value) - power) < 0.1, name
        assert r["power_factor"].value == Decimal(str(POWER_FACTOR)).quantize(Decimal("0.001"))
        assert r["voltage_l1_n"].value == Decimal("230.0")
        assert r["voltage_l1_n_offset"].value == Decimal("230.0")  # int16 x0.1 + 200
        assert r["frequency"].value == Decimal("50.00")
        assert r["status"].value == 0
        assert r["fault-active"].value == 0
        assert r["powered"].value == 1
        assert r["fault-input"].value == 0
        assert r["powered"].raw == b"\x01"
        assert r["relay"].value == 0  # coil (function 1)


async def test_input_registers_and_bit_fields_follow_injected_faults():
    base = free_port_range(1)
    async with MeterFleet(1, base) as fleet:
        dev = device_for(
            fleet, 0, ["status", "fault-active", "fault-input", "active_energy_import"]
        )
        fc4 = dev.model_copy(
            update={
                "points": tuple(
                    p.model_copy(update={"function_code": 4}) if p.function_code == 3 else p
                    for p in dev.points
                )
            }
        )
        collector = create_collector("M1", fc4)
        fleet.meters[0].inject(FaultKind.FROZEN, now=time.time())
        r = by_point(await collector.poll_once())  # type: ignore[attr-defined]
    assert r["status"].value == 0b11  # bit 0 fault injected, bit 1 frozen
    assert r["fault-active"].value == 1
    assert r["fault-input"].value == 1
    assert r["active_energy_import"].quality.status is QualityStatus.GOOD


@pytest.mark.parametrize("transport", ["tcp", "rtu-over-tcp", "rtu"])
async def test_block_reads_send_the_planned_requests_only(transport):
    base = free_port_range(1)
    async with MeterFleet(1, base, transport=transport) as fleet:
        collector = create_collector("M1", device_for(fleet, 0, max_gap=0))
        await collector.poll_once()  # type: ignore[attr-defined]
        before = fleet.meters[0].requests
        readings = await collector.poll_once()  # type: ignore[attr-defined]
        sent = fleet.meters[0].requests - before
    plan = collector.requests  # type: ignore[attr-defined]
    # 27 points in 4 requests: coil 0, discrete inputs 0-1, registers 0-8 and 10-44 (9 is
    # unmapped)
    assert [r.describe() for r in plan] == [
        "FC1 0..0 (1 bits, 1 point)",
        "FC2 0..1 (2 bits, 2 points)",
        "FC3 0..8 (9 registers, 6 points)",
        "FC3 10..44 (35 registers, 18 points)",
    ]
    assert sent == 4
    assert len(readings) == 27


async def test_an_unmapped_register_splits_the_request_and_nothing_is_lost():
    base = free_port_range(1)
    async with MeterFleet(1, base) as fleet:
        collector = create_collector("M1", device_for(fleet, 0, max_gap=8))
        first = await collector.poll_once()  # type: ignore[attr-defined]
        second = await collector.poll_once()  # type: ignore[attr-defined]
    assert all(r.quality.status is QualityStatus.GOOD for r in first + second)
    assert collector.stats.exceptions == {"modbus-exception-illegal-address": 1}  # type: ignore[attr-defined]
    assert [r.describe() for r in collector.requests][2:] == [  # type: ignore[attr-defined]
        "FC3 0..8 (9 registers, 6 points)",
        "FC3 10..44 (35 registers, 18 points)",
    ]
