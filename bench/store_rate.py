"""Sustained readings per second into the SQLite store, next to plain executemany of the same
rows in the same run (the floor any store on SQLite pays), and memory over a long soak.

Rows are what a factory produces: N series (meters x points), one reading per series per
"second", committed in one transaction per batch (the gateway commits once a second).

Run from the repository root:
  .venv/bin/python -m bench.store_rate [--series 1000] [--batches 30]
  .venv/bin/python -m bench.store_rate --soak 3600 --rate 10000    # memory over an hour
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.store.schema import SCHEMA_STATEMENTS, connect
from gateway.store.sqlite import Store

GOOD = Quality.good()
T0 = 1_764_000_000_000_000_000


def readings_for(second: int, series: int) -> list[Reading]:
    ts = T0 + second * 1_000_000_000
    return [
        Reading.trusted(
            f"M{s // 40:04d}",
            f"p{s % 40}",
            Quantity.ACTIVE_POWER,
            PointKind.GAUGE,
            "kW",
            ts,
            b"\x42\x28\x00\x00",
            Decimal("42") + s % 7,
            GOOD,
        )
        for s in range(series)
    ]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rate(series: int, batches: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tanji-bench-store-"))
    batches_data = [readings_for(b, series) for b in range(batches)]

    # plain executemany of the same rows (already built as tuples) into the same schema
    conn = connect(work / "plain.db")
    for statement in SCHEMA_STATEMENTS:
        conn.execute(statement)
    ids = {(f"M{s // 40:04d}", f"p{s % 40}"): s + 1 for s in range(series)}
    rows = [
        [
            (ids[(r.meter_id, r.point)], r.ts_ns, None, r.raw, str(r.value), "good", None)
            for r in batch
        ]
        for batch in batches_data
    ]
    plain = []
    for batch in rows:
        t = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO readings (series, ts_ns, source_ts_ns, raw, value, quality, reason)"
            " VALUES (?,?,?,?,?,?,?)",
            batch,
        )
        conn.execute("COMMIT")
        plain.append(len(batch) / (time.perf_counter() - t))
    conn.close()

    store = Store(work / "store.db")
    store.register_series(
        (r.meter_id, r.point, r.quantity, r.kind, r.unit) for r in batches_data[0]
    )
    ours = []
    for batch in batches_data:
        t = time.perf_counter()
        store.append_readings(batch)
        ours.append(len(batch) / (time.perf_counter() - t))
    store.close()
    p, o = statistics.median(plain), statistics.median(ours)
    return {
        "series": series,
        "batches": batches,
        "plain_executemany_rows_per_s": round(p),
        "store_readings_per_s": round(o),
        "ratio": round(o / p, 3),
        "note": "median over batches; one fsynced transaction per batch (WAL, synchronous=FULL)",
    }


def soak(seconds: float, per_s: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tanji-bench-soak-"))
    store = Store(work / "soak.db")
    samples = []
    start = time.monotonic()
    second = 0
    while time.monotonic() - start < seconds:
        store.append_readings(readings_for(second, per_s))
        second += 1
        if second % 60 == 0:
            samples.append((round(time.monotonic() - start), round(rss_mb(), 1)))
        time.sleep(max(0.0, start + second - time.monotonic()))
    store.close()
    rss = [s[1] for s in samples]
    return {
        "seconds": round(time.monotonic() - start),
        "readings_per_s": per_s,
        "readings": second * per_s,
        "rss_mb_first_minute": rss[0] if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "rss_mb_max": max(rss) if rss else None,
        "rss_samples_per_minute": samples,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.store_rate", description=__doc__)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--soak", type=float, default=0, help="seconds of soak instead of rate")
    ap.add_argument("--rate", type=int, default=10_000, help="soak: readings per second")
    args = ap.parse_args(argv)
    report = soak(args.soak, args.rate) if args.soak else rate(args.series, args.batches)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
