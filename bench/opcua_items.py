"""10,000 monitored items: notifications per second delivered into the store by tanji's OPC UA
collector, its CPU and RSS, next to a bare asyncua subscription client in the same run.

    .venv/bin/python -m bench.opcua_items [--items 10000] [--seconds 30]

An asyncua server in its own process serves `--items` Double variables, all changed every
second. *Ours*: one OpcUaCollector subscribing to all of them (publishing 1 s), every batch
written to a real SQLite store (gateway.store.sqlite.Store). *Bare*: an asyncua Client with one
subscription and a handler that counts notifications. Each runs alone for `--seconds`
against the same server; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NS = "urn:tanji:bench:items"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(port: int, items: int) -> None:
    from asyncua import ua
    from asyncua.server.server import Server

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    idx = await server.register_namespace(NS)
    folder = await server.nodes.objects.add_folder(
        ua.NodeId(ua.String("Bench"), ua.Int16(idx)), "Bench"
    )
    variables = [
        await folder.add_variable(ua.NodeId(ua.String(f"V{i}"), ua.Int16(idx)), f"V{i}", 0.0)
        for i in range(items)
    ]
    async with server:
        print("ready", flush=True)
        step = 0
        while True:
            step += 1
            started = time.monotonic()
            for i, var in enumerate(variables):
                await server.write_attribute_value(
                    var.nodeid, ua.DataValue(ua.Variant(float(step + i)))
                )
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def ours(port: int, items: int, seconds: float, db: Path) -> dict[str, Any]:
    from collectors.opcua import OpcUaCollector, OpcUaDevice
    from gateway.models import PointKind, Quantity
    from gateway.store.sqlite import Store

    device = OpcUaDevice.model_validate(
        {
            "connection": {
                "endpoint": f"opc.tcp://127.0.0.1:{port}/bench",
                "poll_interval_s": 1.0,
                "timeout_s": 10.0,
            },
            "points": [
                {
                    "name": f"p{i}",
                    "quantity": "active_power",
                    "kind": "gauge",
                    "unit": "kW",
                    "node": f"nsu={NS};s=V{i}",
                    "queue_size": 1,
                }
                for i in range(items)
            ],
        }
    )
    store = Store(db)
    store.register_series(
        ("BENCH", f"p{i}", Quantity.ACTIVE_POWER, PointKind.GAUGE, "kW") for i in range(items)
    )
    collector = OpcUaCollector("BENCH", device, time.time_ns)
    stored = 0
    first_full: float | None = None
    rss_before, cpu0 = rss_mb(), cpu_s()
    t0 = time.monotonic()

    async def pump() -> None:
        nonlocal stored, first_full
        async for batch in collector.stream():
            await asyncio.to_thread(store.append_readings, batch)
            if first_full is None and len(batch) >= items:
                first_full = time.monotonic()  # subscribed and first read done
            stored += len(batch)

    task = asyncio.create_task(pump())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    wall = time.monotonic() - t0
    store.close()
    steady = wall - ((first_full or t0) - t0)
    return {
        "readings_stored": stored,
        "readings_per_s": round(stored / wall),
        "setup_s": round((first_full or t0) - t0, 1),
        "steady_s": round(steady, 1),
        "cpu_s": round(cpu_s() - cpu0, 2),
        "cpu_share_of_one_core": round((cpu_s() - cpu0) / wall, 3),
        "rss_mb_growth": round(rss_mb() - rss_before, 1),
        "bad": sum(collector.stats.exceptions.values()),
    }


async def bare(port: int, items: int, seconds: float) -> dict[str, Any]:
    from asyncua import ua
    from asyncua.client.client import Client

    class Count:
        n = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            self.n += 1

    handler = Count()
    rss_before, cpu0 = rss_mb(), cpu_s()
    t0 = time.monotonic()
    async with Client(f"opc.tcp://127.0.0.1:{port}/bench", timeout=10) as client:
        idx = await client.get_namespace_index(NS)
        nodes = [
            client.get_node(ua.NodeId(ua.String(f"V{i}"), ua.Int16(idx))) for i in range(items)
        ]
        sub = await client.create_subscription(1000, handler)
        await sub.subscribe_data_change(nodes, queuesize=1, sampling_interval=1000)
        subscribed = time.monotonic()
        await asyncio.sleep(max(0.0, seconds - (subscribed - t0)))
    wall = time.monotonic() - t0
    return {
        "notifications": handler.n,
        "notifications_per_s": round(handler.n / wall),
        "setup_s": round(subscribed - t0, 1),
        "cpu_s": round(cpu_s() - cpu0, 2),
        "cpu_share_of_one_core": round((cpu_s() - cpu0) / wall, 3),
        "rss_mb_growth": round(rss_mb() - rss_before, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.items))
        return
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.opcua_items",
            "--serve",
            str(port),
            "--items",
            str(args.items),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        t = time.monotonic()
        assert server.stdout.readline().startswith("ready")
        server_setup = time.monotonic() - t
        with tempfile.TemporaryDirectory() as tmp:
            mine = asyncio.run(ours(port, args.items, args.seconds, Path(tmp) / "store.db"))
        theirs = asyncio.run(bare(port, args.items, args.seconds))
    finally:
        server.kill()
    result = {
        "bench": "opcua_items",
        "items": args.items,
        "seconds": args.seconds,
        "server_setup_s": round(server_setup, 1),
        "ours": mine,
        "bare_asyncua": theirs,
        "ratio_ours_to_bare": round(
            mine["readings_per_s"] / max(1, theirs["notifications_per_s"]), 3
        ),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
