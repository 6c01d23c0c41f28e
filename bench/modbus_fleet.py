"""A factory's worth of Modbus TCP meters: share of poll deadlines met, gateway CPU and RSS.

Starts `tanji sim modbus --meters N` (one pymodbus server per meter, own process) and
`tanji run` on a generated site.toml with N meters x P points polled every INTERVAL seconds
(real collectors, real SQLite store; MQTT has no broker here, so the sync just waits). After a
warm-up it measures, over the window, from /proc and from the gateway's status file:

- ``deadlines_met``: 1 - overruns / (cycles + overruns), summed over meters (a cycle that
  does not finish before the next one is due skips that start and counts as an overrun);
- ``gateway_cpu_share_of_one_core``: (utime + stime) / window;
- ``gateway_peak_rss_mb``: VmHWM at the end;
- readings stored and bad readings in the window.

By default the simulator runs on CPU 0 and the gateway on CPU 1 (``--pin split``), so the
gateway's share is its own. Prints one JSON object.

Run from the repository root:
  .venv/bin/python -m bench.modbus_fleet [--meters 1000] [--points 40] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from collectors.modbus import ModbusPoint
from collectors.modbus.plan import plan
from collectors.modbus.profiles import load_profile
from gateway.cli.demo_site import DEMO_USCC, free_port_range

TANJI = [sys.executable, "-m", "gateway"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def bench_points(count: int) -> list[dict[str, Any]]:
    """`count` points over the tanji-sim holding registers: its register points, then bit
    fields of the status word, then second names for the same registers."""
    profile = load_profile("tanji-sim")
    registers = [
        p.model_dump(mode="json", exclude_defaults=True)
        for p in profile.modbus_points([q.name for q in profile.points])
        if p.function_code == 3
    ]
    points = list(registers)
    for bit in range(1, 16):
        points.append(
            {
                "name": f"status-bit-{bit}",
                "quantity": "status",
                "kind": "gauge",
                "unit": "1",
                "address": 8,
                "data_type": "uint16",
                "bit": bit,
            }
        )
    i = 0
    while len(points) < count:
        again = dict(registers[i % len(registers)])
        if again["kind"] == "gauge":
            points.append({**again, "name": f"{again['name']}-again-{i}"})
        i += 1
    return points[:count]


def requests_per_cycle(points: int) -> int:
    specs = [ModbusPoint.model_validate(p) for p in bench_points(points)]
    return len(plan(specs, max_registers=125, max_bits=2000, max_gap=0))


def site(
    meters: int, points: int, base_port: int, interval_s: float, workdir: Path
) -> dict[str, Any]:
    pts = bench_points(points)
    return {
        "enterprise": {"name": "bench", "uscc": DEMO_USCC},
        "gateway_id": "bench",
        "store": {"path": str(workdir / "bench.db"), "commit_interval_s": 1.0},
        "mqtt": {"broker_url": f"mqtt://127.0.0.1:{free_port_range(1)}"},
        "meters": [
            {
                "id": f"M{i:04d}",
                "serial": f"S{i}",
                "model": "tanji simulated meter",
                "carrier": "electricity",
                "accuracy_class": "1",
                "protocol": "modbus_tcp",
                "max_gap": 0,
                "connection": {
                    "host": "127.0.0.1",
                    "port": base_port + i,
                    "poll_interval_s": interval_s,
                    "timeout_s": interval_s,
                },
                "points": pts,
            }
            for i in range(meters)
        ],
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def status(path: Path) -> dict[str, Any]:
    for _ in range(50):
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"no status at {path}")


def totals(snapshot: dict[str, Any]) -> dict[str, int]:
    meters = snapshot["meters"].values()
    return {
        "cycles": sum(m["poll"]["cycles"] for m in meters),
        "overruns": sum(m["poll"]["overruns"] for m in meters),
        "timeouts": sum(m["poll"]["timeouts"] for m in meters),
        "readings": sum(m["readings"] for m in meters),
        "bad": sum(m["bad"] for m in meters),
    }


def wait_for_fresh_status(path: Path, after_ns: int) -> dict[str, Any]:
    while True:
        snap = status(path)
        if int(snap["written_ns"]) > after_ns:
            return snap
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.modbus_fleet", description=__doc__)
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pin", choices=["split", "none"], default="split")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="tanji-bench-fleet-"))
    base = free_port_range(args.meters)
    config = workdir / "site.toml"
    config.write_text(tomli_w.dumps(site(args.meters, args.points, base, args.interval, workdir)))
    status_file = workdir / "bench.db.status.json"
    sim = subprocess.Popen(
        [*TANJI, "sim", "modbus", "--meters", str(args.meters), "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        assert sim.stdout is not None
        for _ in range(args.meters):  # one line per link once all servers listen
            sim.stdout.readline()
        gateway = subprocess.Popen(
            [*TANJI, "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "gateway.log", "wb"),  # noqa: SIM115
        )
        if args.pin == "split":
            os.sched_setaffinity(sim.pid, {0})
            os.sched_setaffinity(gateway.pid, {1})
        time.sleep(args.warmup)
        start_snap = wait_for_fresh_status(status_file, time.time_ns())
        cpu0, t0 = cpu_seconds(gateway.pid), time.monotonic()
        time.sleep(args.seconds)
        end_snap = wait_for_fresh_status(status_file, time.time_ns())
        cpu1, t1 = cpu_seconds(gateway.pid), time.monotonic()
        rss = peak_rss_mb(gateway.pid)
    finally:
        for proc in (gateway, sim):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in (gateway, sim):
            if proc is not None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    a, b = totals(start_snap), totals(end_snap)
    d = {k: b[k] - a[k] for k in a}
    window = (int(end_snap["written_ns"]) - int(start_snap["written_ns"])) / 1e9
    report = {
        "meters": args.meters,
        "points_per_meter": args.points,
        "interval_s": args.interval,
        "window_s": round(window, 1),
        "pin": args.pin,
        "requests_per_cycle": requests_per_cycle(args.points),
        "cycles": d["cycles"],
        "overruns": d["overruns"],
        "deadlines_met": round(1 - d["overruns"] / max(1, d["cycles"] + d["overruns"]), 5),
        "cycles_expected": int(args.meters * window / args.interval),
        "timeouts": d["timeouts"],
        "readings": d["readings"],
        "bad_readings": d["bad"],
        "readings_per_s": round(d["readings"] / window),
        "gateway_cpu_share_of_one_core": round((cpu1 - cpu0) / (t1 - t0), 3),
        "gateway_peak_rss_mb": round(rss, 1),
        "workdir": str(workdir),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
