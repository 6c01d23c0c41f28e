"""Modbus TCP collector against the real meter-fleet simulator over loopback sockets."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import pytest

from collectors import create_collector
from collectors.modbus import ModbusTcpDevice
from gateway.demo import free_port_range
from gateway.models import QualityStatus
from simulators.modbus_fleet import Fault, MeterFleet


def device(port: int) -> ModbusTcpDevice:
    return ModbusTcpDevice.model_validate(
        {
            "connection": {
                "host": "127.0.0.1",
                "port": port,
                "timeout_s": 0.3,
                "poll_interval_s": 0.2,
                "backoff_initial_s": 0.1,
            },
            "points": [
                {
                    "quantity": "active_energy_import",
                    "kind": "counter",
                    "unit": "kWh",
                    "address": 0,
                    "data_type": "uint32",
                    "scale": "0.01",
                },
                {
                    "quantity": "active_power",
                    "kind": "gauge",
                    "unit": "kW",
                    "address": 2,
                    "data_type": "float32",
                },
                {
                    "quantity": "active_energy_export",
                    "kind": "counter",
                    "unit": "kWh",
                    "address": 6,
                    "data_type": "uint32",
                    "word_order": "CDAB",
                    "scale": "0.01",
                },
            ],
        }
    )


async def test_reads_decode_and_keep_raw_words():
    base = free_port_range(1)
    async with MeterFleet(1, base) as fleet:
        collector = create_collector("M1", device(base))
        readings = await collector.poll_once()  # type: ignore[attr-defined]
    energy, power, swapped = readings
    assert all(r.quality.status is QualityStatus.GOOD for r in readings)
    # the word-swapped copy of the counter decodes to the same value
    assert energy.value == swapped.value
    assert energy.raw[2:] + energy.raw[:2] == swapped.raw
    assert int.from_bytes(energy.raw, "big") * Decimal("0.01") == energy.value
    sim = fleet.meters[0]
    assert abs(energy.value - sim.counter_kwh_at(energy.ts_ns / 1e9)) <= Decimal("0.01")
    assert abs(float(power.value) - sim.power_kw(power.ts_ns / 1e9)) < 0.5


async def test_faulty_meter_gives_bad_readings_and_others_are_unaffected():
    base = free_port_range(2)
    async with MeterFleet(2, base) as fleet:
        faulty, healthy = (
            create_collector("M1", device(base)),
            create_collector("M2", device(base + 1)),
        )
        fleet.meters[0].fault = Fault.BUSY
        busy = await faulty.poll_once()  # type: ignore[attr-defined]
        assert {r.quality.reason for r in busy} == {"modbus-exception-device-busy"}
        assert all(r.value is None for r in busy)
        fleet.meters[0].fault = Fault.SILENT
        silent = await faulty.poll_once()  # type: ignore[attr-defined]
        assert silent[0].quality.reason == "timeout"
        ok = await healthy.poll_once()  # type: ignore[attr-defined]
        assert all(r.quality.status is QualityStatus.GOOD for r in ok)
        fleet.meters[0].fault = Fault.NONE
        again = await faulty.poll_once()  # type: ignore[attr-defined]
        assert all(r.quality.status is QualityStatus.GOOD for r in again)


async def test_unreachable_meter_backs_off():
    port = free_port_range(1)  # nothing listens here
    collector = create_collector("M1", device(port))
    first = await collector.poll_once()  # type: ignore[attr-defined]
    assert {r.quality.reason for r in first} == {"connect-failed"}
    backoff1 = collector._backoff_s  # type: ignore[attr-defined]
    await collector.poll_once()  # type: ignore[attr-defined]
    assert collector._backoff_s == 2 * backoff1  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")
async def test_mbpoll_reads_a_simulated_meter():
    """Interop: an independent Modbus client (Debian's mbpoll) reads the simulator."""
    import asyncio

    base = free_port_range(1)
    async with MeterFleet(1, base) as fleet:
        proc = await asyncio.create_subprocess_exec(
            "mbpoll",
            "-1",
            "-a",
            "1",
            "-r",
            "1",
            "-c",
            "2",
            "-t",
            "4:int",
            "-B",
            "-p",
            str(base),
            "127.0.0.1",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    line = next(ln for ln in stdout.decode().splitlines() if ln.startswith("[1]:"))
    value = int(line.split()[1]) * Decimal("0.01")
    assert abs(value - fleet.meters[0].counter_kwh_at(fleet.meters[0].t0)) < 1
