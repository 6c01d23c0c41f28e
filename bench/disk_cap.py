"""How far the store overshoots `[store] max_disk_mb` at a high reading rate: a real `tanji run`
against `tanji sim modbus`, the store prefilled to just under the cap, the size on disk of the
store file plus its WAL sampled every 50 ms.

The prefill is old readings of the meters' gauges (evictable: the disk cap removes them
first), so the run shows eviction at the cap and then, without a platform to acknowledge the
new readings' records, the store full of readings it must keep.

Run from the repository root:
  .venv/bin/python -m bench.disk_cap [--meters 24] [--poll 0.35] [--cap-mb 16] [--seconds 150]
  .venv/bin/python -m bench.disk_cap --tree /tmp/tanji-before   # another checkout's gateway
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w

from gateway.config import parse_site_config
from gateway.models import PointKind, Quality, Reading
from gateway.store.sqlite import Store

POINTS = [
    "active_energy_import",
    "active_power",
    "voltage_l1_n",
    "voltage_l2_n",
    "voltage_l3_n",
    "current_l1",
    "current_l2",
    "current_l3",
    "power_factor",
    "frequency",
]
USCC = "91320000MA1TANJ0D7"  # the demo's (valid check digit)
RAW, GOOD = b"\x42\x28\x00\x00", Quality.good()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site(work: Path, meters: int, base: int, poll_s: float, cap_mb: float) -> dict[str, Any]:
    return {
        "enterprise": {"name": "disk cap bench", "uscc": USCC},
        "gateway_id": "bench-gw",
        "meters": [
            {
                "id": f"M{i + 1}",
                "serial": f"SIM-{i + 1:05d}",
                "model": "tanji simulated meter (not a real product)",
                "carrier": "electricity",
                "accuracy_class": "1",
                "protocol": "modbus_tcp",
                "connection": {
                    "host": "127.0.0.1",
                    "port": base + i,
                    "poll_interval_s": poll_s,
                    "timeout_s": 1.0,
                },
                "profile": "tanji-sim",
                "profile_points": POINTS,
            }
            for i in range(meters)
        ],
        "store": {"path": str(work / "gateway.db"), "max_disk_mb": cap_mb},
        "aggregation": {"interval": "1min", "grace_s": 2.0},
        "mqtt": {"broker_url": f"mqtt://127.0.0.1:{free_port()}"},  # nothing listens
    }


def prefill(config_path: Path, target_bytes: int) -> int:
    """Old readings of every meter's gauges until the store holds `target_bytes`."""
    from gateway.config import load_site_config

    config = load_site_config(config_path)
    store = Store(config.store.path)
    points = [(m.id, p) for m in config.meters for p in m.points]
    store.register_series((m, p.name, p.quantity, p.kind, p.unit) for m, p in points)
    gauges = [(m, p) for m, p in points if p.kind is PointKind.GAUGE]
    t = time.time_ns() - 3 * 86400 * 10**9  # three days ago
    written = 0
    while store.used_bytes() < target_bytes:
        batch = [
            Reading.trusted(m, p.name, p.quantity, p.kind, p.unit, t + k, RAW, Decimal(42), GOOD)
            for k, (m, p) in enumerate(gauges)
        ]
        store.append_readings(batch)
        written += len(batch)
        t += 10**9
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return written


def disk_bytes(db: Path) -> tuple[int, int]:
    """Sizes of the store file and of its WAL."""
    sizes = [0, 0]
    for i, path in enumerate((db, db.with_name(db.name + "-wal"))):
        with contextlib.suppress(FileNotFoundError):
            sizes[i] = path.stat().st_size
    return sizes[0], sizes[1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tanji-bench-cap-"))
    base = free_port()
    data = site(work, args.meters, base, args.poll, args.cap_mb)
    parse_site_config(data, "bench site")
    (work / "site.toml").write_text(tomli_w.dumps(data))
    cap = int(args.cap_mb * 1e6)
    prefilled = prefill(work / "site.toml", int(cap * args.prefill))
    tree = Path(args.tree).resolve() if args.tree else Path.cwd()
    env = {**os.environ, "PYTHONPATH": str(tree)}
    meters = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "modbus", "--meters", str(args.meters),
         "--base-port", str(base)],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(2)
    log = (work / "gateway.log").open("wb")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(work / "site.toml")]
        + (["--verbose"] if args.verbose else []),
        cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    db = work / "gateway.db"
    status = db.with_name(db.name + ".status.json")
    peak, peak_at, peak_wal, over_s = 0, 0.0, 0, 0.0
    start = time.monotonic()
    last = start
    first_status: dict[str, Any] | None = None
    try:
        while (now := time.monotonic()) - start < args.seconds:
            file_size, wal_size = disk_bytes(db)
            size = file_size + wal_size
            if size > peak:
                peak, peak_at, peak_wal = size, now - start, wal_size
            if size > cap:
                over_s += now - last
            last = now
            if first_status is None and status.exists():
                first_status = json.loads(status.read_text())
            time.sleep(0.05)
        final = json.loads(status.read_text())
    finally:
        gateway.send_signal(signal.SIGINT)
        code = gateway.wait(timeout=60)
        meters.kill()
        meters.wait()
    assert first_status is not None
    stored = final["readings_stored"] - first_status["readings_stored"]
    span_s = (int(final["written_ns"]) - int(first_status["written_ns"])) / 1e9
    return {
        "tree": str(tree),
        "meters": args.meters,
        "points_per_meter": len(POINTS),
        "poll_s": args.poll,
        "readings_per_s": round(stored / span_s) if span_s > 0 else None,
        "cap_mb": args.cap_mb,
        "prefilled_readings": prefilled,
        "seconds": args.seconds,
        "peak_disk_mb": round(peak / 1e6, 2),
        "peak_at_s": round(peak_at, 1),
        "wal_at_peak_mb": round(peak_wal / 1e6, 2),
        "overshoot_pct": round(100 * (peak - cap) / cap, 1),
        "seconds_over_cap": round(over_s, 1),
        "readings_refused": final.get("readings_refused"),
        "store_refusing": final.get("store_refusing"),
        "exit_code": code,
        "workdir": str(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=24)
    parser.add_argument("--poll", type=float, default=0.35, help="poll interval, s")
    parser.add_argument("--cap-mb", type=float, default=16)
    parser.add_argument("--prefill", type=float, default=0.9, help="share of the cap")
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--tree", help="run the gateway from this checkout (default: here)")
    parser.add_argument("--verbose", action="store_true", help="the gateway logs at INFO")
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
