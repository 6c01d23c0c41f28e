"""What aggregation costs the gateway: one pass that seals a 15-minute period for every
counter of a site, a steady pass with nothing to seal (what the aggregator does every few
seconds), and a pass that revises every counter's sealed period after a backfilled reading.

A real Gateway on a real SQLite file (readings every second for each counter, the meters'
connections are never opened). Prints one JSON object.

Run from the repository root:
  .venv/bin/python -m bench.aggregate_pass [--meters 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.config import parse_site_config
from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.runtime.supervisor import Gateway

NS = 1_000_000_000
T0 = 1_764_000_000 * NS - (1_764_000_000 * NS) % (900 * NS)  # a 15-minute boundary
GOOD = Quality.good()


def site(meters: int, path: Path) -> dict[str, Any]:
    return {
        "enterprise": {"name": "bench", "uscc": "91350100M000100Y43"},
        "gateway_id": "bench",
        "store": {"path": str(path)},
        "aggregation": {"interval": "15min", "grace_s": 5},
        "meters": [
            {
                "id": f"M{i:04d}",
                "serial": f"S{i}",
                "model": "bench",
                "carrier": "electricity",
                "accuracy_class": "1",
                "line": f"line-{i % 10}",
                "protocol": "modbus_tcp",
                "connection": {"host": "127.0.0.1", "port": 1 + i, "poll_interval_s": 1.0},
                "profile": "tanji-sim",
            }
            for i in range(meters)
        ],
    }


def energy(meter: int, t_ns: int) -> Reading:
    kwh = Decimal(1000 + meter) + Decimal((t_ns - T0) // NS) / 100
    return Reading.trusted(
        f"M{meter:04d}",
        "active_energy_import",
        Quantity.ACTIVE_ENERGY_IMPORT,
        PointKind.COUNTER,
        "kWh",
        t_ns,
        b"\0\0\0\0",
        kwh,
        GOOD,
    )


class Clock:
    now = T0

    def __call__(self) -> int:
        return self.now


def timed(gw: Gateway, clock: Clock, now_ns: int) -> tuple[float, int, float]:
    """Seconds the pass took, records it made, and the longest the store writer would have
    waited for the database thread meanwhile (one meter's records)."""
    clock.now = now_ns
    waits: list[float] = []

    async def run() -> int:
        async def writer() -> None:
            while True:
                t = time.perf_counter()
                await gw._db(lambda: None)
                waits.append(time.perf_counter() - t)
                await asyncio.sleep(0.01)

        probe = asyncio.create_task(writer())
        records = await gw.aggregator.due()
        probe.cancel()
        return len(records)

    start = time.perf_counter()
    n = asyncio.run(run())
    return time.perf_counter() - start, n, max(waits, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        gw = Gateway(parse_site_config(site(args.meters, Path(tmp) / "g.db")), clock=clock)
        # one period and the readings after its end (CONTEXT of them decide its last steps)
        for second in range(0, 900 + 20):
            gw.store.append_readings(
                [energy(m, T0 + second * NS + 300_000_000) for m in range(args.meters)]
            )
        now = T0 + 920 * NS
        timed(gw, clock, now - 20 * NS)  # first pass: sets the late-readings cursor
        seal_s, sealed, seal_wait = timed(gw, clock, now)
        gw.store.append_readings([energy(m, T0 + 915 * NS) for m in range(args.meters)])
        steady_s, none, _ = timed(gw, clock, now + NS)
        gw.store.append_readings(
            [energy(m, T0 + 450 * NS + 600_000_000) for m in range(args.meters)]
        )
        revise_s, revised, _ = timed(gw, clock, now + 2 * NS)
        asyncio.run(gw.close())
    print(
        json.dumps(
            {
                "meters": args.meters,
                "readings_per_counter_per_period": 900,
                "seal_pass_s": round(seal_s, 3),
                "records_sealed": sealed,
                "seal_ms_per_counter": round(seal_s * 1000 / args.meters, 3),
                "longest_writer_wait_s": round(seal_wait, 3),
                "steady_pass_s": round(steady_s, 3),
                "records_in_steady_pass": none,
                "revision_pass_s": round(revise_s, 3),
                "records_revised": revised,
            }
        )
    )


if __name__ == "__main__":
    main()
