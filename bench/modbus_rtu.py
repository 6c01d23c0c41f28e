"""Modbus RTU at 9600 baud: transactions per second as a share of the bus's theoretical maximum.

A virtual RS-485 line (simulators/serial_line.py: two pseudo-terminals, each frame delivered
after its time on the wire, half-duplex) joins the gateway's collectors to simulated meters
(pymodbus' RTU server). Several units share the line; their collectors poll back to back
through the shared link, as a busy bus master does. Each transaction reads REGISTERS holding
registers: a request of 8 bytes and a response of 5 + 2 x REGISTERS bytes.

The theoretical maximum for those frames is 1 / (time of both frames on the wire + the two
3.5-character silences the standard requires between frames; Modbus over Serial Line v1.02,
2.5.1.1), with 10-bit characters (8N1: a pseudo-terminal refuses parity settings, so the line
is timed as 8N1). The simulated slave answers
as soon as the request has arrived, so a perfect master could exceed the figure by one
silence; the share is honest about what the master costs on top of the wire.

Run from the repository root: .venv/bin/python -m bench.modbus_rtu [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from collectors import Shared, create_collector
from collectors.modbus import ModbusRtuDevice
from simulators.modbus_fleet import MeterFleet

BITS_PER_CHAR = 10  # start, 8 data, no parity, stop: a pseudo-terminal refuses parity bits


def theoretical_tps(baud: int, registers: int) -> dict[str, float]:
    char_s = BITS_PER_CHAR / baud
    request, response = 8, 5 + 2 * registers
    gap_s = 3.5 * char_s if baud <= 19200 else 0.00175
    per_tx = (request + response) * char_s + 2 * gap_s
    return {"request_bytes": request, "response_bytes": response, "tps": 1 / per_tx}


async def run(baud: int, units: int, registers: int, seconds: float) -> dict[str, Any]:
    points = [
        {
            "name": f"r{i}",
            "quantity": "status",
            "kind": "gauge",
            "unit": "1",
            "address": 10 + i,  # the tanji-sim map's contiguous block 10..40
            "data_type": "uint16",
        }
        for i in range(registers)
    ]
    async with MeterFleet(
        units, transport="rtu", units_per_link=units, baudrate=baud, parity="N"
    ) as fleet:
        shared = Shared()
        collectors = [
            create_collector(
                f"U{i + 1}",
                ModbusRtuDevice.model_validate(
                    {
                        "connection": {
                            "serial_port": fleet.serial_port_of(i),
                            "unit_id": fleet.unit_of(i),
                            "baudrate": baud,
                            "parity": "N",
                            "timeout_s": 1.0,
                        },
                        "points": points,
                    }
                ),
                shared=shared,
            )
            for i in range(units)
        ]
        for c in collectors:  # open the port, warm up
            await c.poll_once()  # type: ignore[attr-defined]
        done, bad = 0, 0
        deadline = time.monotonic() + seconds
        started, cpu0 = time.monotonic(), time.process_time()

        async def master(c: Any) -> None:
            nonlocal done, bad
            while time.monotonic() < deadline:
                readings = await c.poll_once()
                done += 1
                bad += sum(1 for r in readings if r.value is None)

        await asyncio.gather(*(master(c) for c in collectors))
        wall, cpu = time.monotonic() - started, time.process_time() - cpu0
        carried = sum(line.bytes_carried for line in fleet.lines)
        shared.close()
    theory = theoretical_tps(baud, registers)
    tps = done / wall
    return {
        "baud": baud,
        "units_on_line": units,
        "registers_per_request": registers,
        **{k: round(v, 2) for k, v in theory.items() if k != "tps"},
        "theoretical_max_tps": round(theory["tps"], 2),
        "achieved_tps": round(tps, 2),
        "share_of_max": round(tps / theory["tps"], 3),
        "transactions": done,
        "bad_readings": bad,
        "bytes_on_line": carried,
        "process_cpu_share": round(cpu / wall, 3),
        "seconds": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.modbus_rtu", description=__doc__)
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--registers", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    if not 1 <= args.registers <= 31:
        ap.error("--registers must be 1..31 (the tanji-sim map's contiguous block 10..40)")
    report = asyncio.run(run(args.baud, args.units, args.registers, args.seconds))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
