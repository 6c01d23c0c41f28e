"""Backlog drain after a simulated outage: a site's outbox (and optionally its raw readings)
sent to a local Mosquitto with QoS 1 and the platform's application acks, next to a bare
paho-mqtt QoS 1 publisher of the same payloads in the same run.

    .venv/bin/python -m bench.sync_drain --meters 200 --hours 24
    .venv/bin/python -m bench.sync_drain --meters 200 --hours 24 --readings-every-s 60
    .venv/bin/python -m bench.sync_drain --platform postgres   # platform stores in PostgreSQL

Ours: `CloudSync` (the gateway's sync code) drains the outbox of a real SQLite file; the
platform simulator runs as its own process (SQLite, or PostgreSQL started here) and acks each
batch after its commit. Bare: one paho client publishes the same payload bytes with QoS 1 and
waits for every PUBACK, while a bare paho subscriber process receives them (so the broker
delivers both runs' messages to one subscriber); nothing is stored, nothing acked. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

from cloud_sync import CloudSync, DeliveryConfig, MqttConfig, Topics
from gateway.periods import NS, datetime_to_ns
from gateway.runtime.readings import READINGS_CURSOR, StoreReadings
from gateway.store.sqlite import Store
from simulators.backlog import POINT, fill_outbox, meter, reading, site_records
from tests.conftest import Mosquitto, Postgres, _postgres_bindir
from tests.support.procs import wait_until

USCC = "91350100M000100Y43"
GATEWAY = "bench-gw"
START = datetime_to_ns(datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Shanghai")))

BARE_SUBSCRIBER = """
import sys, time, paho.mqtt.client as paho
port, expected = int(sys.argv[1]), int(sys.argv[2])
got = 0
def on_message(c, u, m):
    global got
    got += 1
    if got == expected:
        print(time.time(), flush=True)
        c.disconnect()
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bare-sub", clean_session=True)
def on_connect(c, u, f, rc, p):
    c.subscribe("bench/bare/#", qos=1)
    print("ready", flush=True)
c.on_connect = on_connect
c.on_message = on_message
c.connect("127.0.0.1", port)
c.loop_forever()
"""


ACK_ONLY_PLATFORM = """
import gzip, json, sys, paho.mqtt.client as paho
port = int(sys.argv[1])
def on_message(c, u, m):
    body = gzip.decompress(m.payload) if m.payload[:2] == b"\\x1f\\x8b" else m.payload
    bid = json.loads(body)["batch_id"]
    ack = {"schema": "tanji.ack/1", "batch_id": bid, "status": "accepted"}
    c.publish(m.topic.rsplit("/", 1)[0] + "/ack", json.dumps(ack), qos=1)
def on_connect(c, u, f, rc, p):
    c.subscribe("tanji/v1/+/+/activity", qos=1)
    c.subscribe("tanji/v1/+/+/readings", qos=1)
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ack-only", clean_session=True)
c.on_connect = on_connect
c.on_message = on_message
c.connect("127.0.0.1", port)
c.loop_forever()
"""


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def make_site(
    workdir: Path, meters: int, hours: float, batch_size: int, readings_every_s: int
) -> tuple[Path, int, int]:
    """The gateway's database after the outage: outbox batches and, optionally, readings."""
    db = workdir / "gateway.db"
    periods = int(hours * 4)
    records = list(site_records(USCC, GATEWAY, meters, START, periods))
    store = Store(db)
    readings = 0
    if readings_every_s:
        fleet = [meter(i) for i in range(meters)]
        store.register_series(
            (m.id, POINT.name, POINT.quantity, POINT.kind, POINT.unit) for m in fleet
        )
        step = readings_every_s * NS
        for k in range(int(hours * 3600 / readings_every_s)):
            ts = START + k * step
            batch = [reading(m, ts, Decimal(k)) for m in fleet]
            store.append_readings(batch)
            readings += len(batch)
    store.close()
    fill_outbox(db, USCC, GATEWAY, records, batch_size, created_ns=START)
    return db, len(records), readings


async def drain_ours(db: Path, port: int, args: argparse.Namespace) -> dict[str, Any]:
    config = MqttConfig(broker_url=f"mqtt://127.0.0.1:{port}")
    policy = DeliveryConfig(
        batch_size=args.batch_size,
        max_in_flight=args.max_in_flight,
        backlog_rate=0,
        readings=args.readings_every_s > 0,
        readings_batch_size=args.readings_batch,
    )
    store = Store(db)
    executor_lock = asyncio.Lock()

    async def in_db(fn: Any) -> Any:
        async with executor_lock:
            return await asyncio.to_thread(fn)

    sync = CloudSync(
        db,
        Topics("tanji/v1", USCC, GATEWAY),
        config,
        f"tanji-{GATEWAY}",
        delivery=policy,
        readings=StoreReadings(store, in_db),
    )
    last_reading = store.last_reading_id()
    cpu0, t0 = cpu_s(), time.perf_counter()
    task = asyncio.create_task(sync.run())
    records_done = None
    while True:
        stats = await sync.stats()
        if stats.pending == 0 and records_done is None:
            records_done = time.perf_counter() - t0
        done_readings = await in_db(lambda: (store.cursor(READINGS_CURSOR) or 0) >= last_reading)
        if stats.pending == 0 and done_readings:
            break
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    store.close()
    return {
        "records_s": records_done,
        "all_s": wall,
        "gateway_cpu_s": round(cpu, 2),
        "acks": sync.counters.acks,
        "readings_sent": sync.counters.readings_sent,
    }


def drain_bare(payloads: list[bytes], port: int) -> dict[str, Any]:
    sub = subprocess.Popen(
        [sys.executable, "-c", BARE_SUBSCRIBER, str(port), str(len(payloads))],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "ready"
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bare-pub")
    client.max_inflight_messages_set(20)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    cpu0, t0, wall0 = cpu_s(), time.perf_counter(), time.time()
    infos = [client.publish(f"bench/bare/{i % 10}", p, qos=1) for i, p in enumerate(payloads)]
    for info in infos:
        info.wait_for_publish(timeout=120)
    acked = time.perf_counter() - t0
    received_at = float(sub.stdout.readline())
    sub.wait(timeout=60)
    cpu = cpu_s() - cpu0
    client.loop_stop()
    client.disconnect()
    return {
        "pubacked_s": acked,
        "delivered_s": received_at - wall0,
        "publisher_cpu_s": round(cpu, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=200)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--max-in-flight", type=int, default=20)
    ap.add_argument("--readings-every-s", type=int, default=0, help="0: no raw readings")
    ap.add_argument("--readings-batch", type=int, default=2000)
    ap.add_argument(
        "--platform",
        choices=("sqlite", "postgres", "ack-only"),
        default="sqlite",
        help="the platform simulator storing into SQLite or PostgreSQL, or a paho client that"
        " acks every batch unread (isolates the gateway's side)",
    )
    ap.add_argument(
        "--broker-nodelay", action="store_true", help="mosquitto's set_tcp_nodelay (default off)"
    )
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tanji-bench-sync-"))
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = Mosquitto(
        binary, workdir / "broker", extra=("set_tcp_nodelay true",) if args.broker_nodelay else ()
    )
    broker.start()
    pg = None
    platform = None
    try:
        t = time.perf_counter()
        db, n_records, n_readings = make_site(
            workdir, args.meters, args.hours, args.batch_size, args.readings_every_s
        )
        setup_s = time.perf_counter() - t
        conn = sqlite3.connect(db)
        payloads = [bytes(p) for (p,) in conn.execute("SELECT payload FROM outbox ORDER BY seq")]
        conn.close()
        target = str(workdir / "platform.db")
        if args.platform == "postgres":
            bindir = _postgres_bindir()
            assert bindir, "PostgreSQL server binaries not found (apt-get install postgresql)"
            pg = Postgres(bindir)
            pg.start()
        platform_args = (
            ["--dsn", pg.dsn, "--ack-key", str(workdir / "platform-ack.key")]
            if pg
            else ["--db", target]
        )
        command = (
            ["-c", ACK_ONLY_PLATFORM, str(broker.port)]
            if args.platform == "ack-only"
            else ["-m", "gateway", "sim", "platform", "--broker",
                  f"mqtt://127.0.0.1:{broker.port}", *platform_args]
        )  # fmt: skip
        platform = subprocess.Popen(
            [sys.executable, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: "Received SUBSCRIBE" in broker.log(), 30, "platform subscribed")
        ours = asyncio.run(drain_ours(db, broker.port, args))
        bare = drain_bare(payloads, broker.port)
        platform_cpu = None
        try:
            with open(f"/proc/{platform.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            platform_cpu = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
        except OSError:
            pass
        if pg is not None:
            import psycopg

            with psycopg.connect(pg.dsn) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                db_bytes = int(row[0]) if row else 0
        else:
            db_bytes = sum(f.stat().st_size for f in workdir.glob("platform.db*"))
        records_s = ours["records_s"]
        result = {
            "bench": "sync_drain",
            "meters": args.meters,
            "outage_hours": args.hours,
            "records": n_records,
            "batches": len(payloads),
            "batch_size": args.batch_size,
            "payload_bytes_avg": round(sum(map(len, payloads)) / len(payloads)),
            "max_in_flight": args.max_in_flight,
            "raw_readings": n_readings,
            "platform_store": args.platform,
            "setup_s": round(setup_s, 1),
            "ours_records_per_s": round(n_records / records_s),
            "ours_drain_s": round(records_s, 2),
            "ours_all_incl_readings_s": round(ours["all_s"], 2),
            "ours_readings_per_s": round(n_readings / ours["all_s"]) if n_readings else None,
            "ours_gateway_cpu_s": ours["gateway_cpu_s"],
            "platform_process_cpu_s": platform_cpu,
            "platform_db_bytes": db_bytes if args.platform != "ack-only" else None,
            "bare_paho_records_per_s_pubacked": round(n_records / bare["pubacked_s"]),
            "bare_paho_pubacked_s": round(bare["pubacked_s"], 2),
            "bare_paho_delivered_s": round(bare["delivered_s"], 2),
            "bare_publisher_cpu_s": bare["publisher_cpu_s"],
            "ratio_ours_to_bare": round(bare["pubacked_s"] / records_s, 3),
        }
        print(json.dumps(result, indent=1))
    finally:
        if platform is not None:
            platform.kill()
        broker.kill()
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
