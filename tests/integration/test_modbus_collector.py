"""Modbus TCP collector: backoff when nobody listens; interop with an independent client."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import pytest

from collectors import create_collector
from collectors.modbus import ModbusTcpDevice
from gateway.cli.demo_site import free_port_range
from simulators.modbus_fleet import MeterFleet


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


async def test_unreachable_meter_backs_off():
    port = free_port_range(1)  # nothing listens here
    collector = create_collector("M1", device(port))
    first = await collector.poll_once()  # type: ignore[attr-defined]
    # the three points are one block read, which could not connect
    assert [r.quality.reason for r in first] == ["connect-failed"] * 3
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
