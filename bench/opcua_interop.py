"""tanji's OPC UA collector against an independent server implementation (node-opcua), so
that what we test is not only asyncua talking to asyncua.

    (cd bench/opcua_interop && npm ci)      # once: node-opcua from the npm registry
    .venv/bin/python -m bench.opcua_interop [--seconds 6]

Starts `node bench/opcua_interop/server.js` on a free loopback port, reads its energy counter
(subscription), power (polled) and production counter (subscription) by namespace URI, and
prints JSON; exit 1 when a point got no good reading or the counter ran backwards, 2 when
node or node-opcua is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from collectors.opcua import OpcUaCollector, OpcUaDevice
from gateway.models import QualityStatus, Reading

HERE = Path(__file__).parent / "opcua_interop"
NS = "urn:tanji:interop:node-opcua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Why the interop check cannot run here, or None."""
    if shutil.which("node") is None:
        return "node (Node.js) is not installed"
    if not (HERE / "node_modules" / "node-opcua").is_dir():
        return f"node-opcua is not installed: (cd {HERE} && npm ci)"
    return None


def device(port: int) -> OpcUaDevice:
    def point(name: str, quantity: str, kind: str, unit: str, node: str, **more: Any) -> dict:
        return {
            "name": name,
            "quantity": quantity,
            "kind": kind,
            "unit": unit,
            "node": f"nsu={NS};s={node}",
            **more,
        }

    return OpcUaDevice.model_validate(
        {
            "connection": {
                "endpoint": f"opc.tcp://127.0.0.1:{port}/interop",
                "poll_interval_s": 0.5,
                "timeout_s": 3.0,
            },
            "points": [
                point(
                    "energy",
                    "active_energy_import",
                    "counter",
                    "kWh",
                    "Line.Meter.ActiveEnergyImport",
                    sampling_interval_ms=250,
                ),
                point(
                    "power", "active_power", "gauge", "kW", "Line.Meter.ActivePower", mode="poll"
                ),
                point(
                    "units",
                    "production_count",
                    "counter",
                    "unit",
                    "Line.Production.UnitsProduced",
                    data_type="integer",
                    sampling_interval_ms=250,
                ),
                {
                    "name": "product",
                    "quantity": "product_code",
                    "node": f"nsu={NS};s=Line.Production.ProductCode",
                },
                {
                    "name": "order",
                    "quantity": "production_order",
                    "node": f"nsu={NS};s=Line.Production.WorkOrder",
                    "mode": "poll",
                },
            ],
        }
    )


async def read_for(port: int, seconds: float) -> list[Reading]:
    collector = OpcUaCollector("NODE-OPCUA", device(port), time.time_ns)
    readings: list[Reading] = []

    async def pump() -> None:
        async for batch in collector.stream():
            readings.extend(batch)

    task = asyncio.create_task(pump())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return readings


def run(seconds: float) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        ["node", str(HERE / "server.js"), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        seen = []
        for line in server.stdout:  # node-opcua may warn first
            seen.append(line)
            if line.startswith("ready"):
                break
        else:
            raise RuntimeError("node-opcua server did not start:\n" + "".join(seen[-20:]))
        readings = asyncio.run(read_for(port, seconds))
    finally:
        server.kill()
        server.wait(timeout=10)
    result: dict[str, Any] = {"bench": "opcua_interop", "server": "node-opcua", "points": {}}
    ok = True
    for name in ("energy", "power", "units"):
        good = [r for r in readings if r.point == name and r.quality.status is QualityStatus.GOOD]
        values = [r.value for r in good if r.value is not None]
        monotonic = all(a <= b for a, b in itertools.pairwise(values))
        result["points"][name] = {
            "readings": len([r for r in readings if r.point == name]),
            "good": len(good),
            "last": str(values[-1]) if values else None,
            "never_backwards": monotonic,
            "reasons": sorted(
                {str(r.quality.reason) for r in readings if r.point == name and r.quality.reason}
            ),
        }
        ok = ok and bool(good) and (monotonic or name == "power")
    for name in ("product", "order"):  # text: a String by subscription, a LocalizedText polled
        texts = [r.text for r in readings if r.point == name and r.text is not None]
        result["points"][name] = {
            "readings": len([r for r in readings if r.point == name]),
            "good": len(texts),
            "last": texts[-1] if texts else None,
            "server_timestamps": all(r.server_ts_ns for r in readings if r.point == name),
        }
        ok = ok and bool(texts)
    result["ok"] = ok
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    missing = available()
    if missing:
        print(json.dumps({"bench": "opcua_interop", "skipped": missing}))
        sys.exit(2)
    result = run(args.seconds)
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
