"""Two platform simulator processes share the load through `$share/...` on a real Mosquitto
with mutual TLS and store into one real PostgreSQL: every record exactly once, re-sent batches
recognised as duplicates whichever instance gets them."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from cloud_sync import CloudSync, DeliveryConfig, MqttConfig, Outbox, Topics
from gateway.periods import datetime_to_ns
from simulators.backlog import fill_outbox, site_records
from simulators.platform import PlatformStore
from tests.conftest import Postgres, TlsBroker
from tests.support.procs import Proc, wait_until

USCC = "91350100M000100Y43"
START = datetime_to_ns(datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Shanghai")))


def platform_proc(t: TlsBroker, dsn: str, name: str, log: Path, key: Path) -> Proc:
    return Proc(
        [
            "sim", "platform", "--broker", t.broker.url, "--dsn", dsn, "--group", "platform",
            "--client-id", name, "--ca-file", str(t.ca.cert_path),
            "--cert-file", str(t.platform.cert), "--key-file", str(t.platform.key),
            "--ack-key", str(key),
        ],
        log,
    )  # fmt: skip


def gateway_link(t: TlsBroker, db: Path, gateway_id: str, ack_key: Path) -> CloudSync:
    config = MqttConfig(
        broker_url=t.broker.url,
        ca_file=t.ca.cert_path,
        cert_file=t.gateway.cert,
        key_file=t.gateway.key,
        platform_ack_key=ack_key,
    )
    topics = Topics("tanji/v1", USCC, gateway_id)
    policy = DeliveryConfig(ack_timeout_s=5, backlog_rate=0)
    return CloudSync(db, topics, config, f"tanji-{gateway_id}", delivery=policy)


async def pending(links: list[CloudSync]) -> int:
    return sum([(await s.stats()).pending for s in links])


async def settle(links: list[CloudSync]) -> None:
    async with asyncio.timeout(60):
        while await pending(links):  # noqa: ASYNC110  (polling other processes' work)
            await asyncio.sleep(0.2)


async def test_two_instances_split_the_load_and_still_deduplicate(
    tmp_path: Path, tls_mosquitto: TlsBroker, postgres: Postgres
):
    t = tls_mosquitto
    key = tmp_path / "platform-ack.key"  # one signing key, made by whichever starts first
    instances = [
        platform_proc(t, postgres.dsn, f"p{i}", tmp_path / f"p{i}.log", key) for i in (1, 2)
    ]
    for p in instances:
        p.start()
    wait_until(
        lambda: all(f"Received SUBSCRIBE from p{i}" in t.broker.log() for i in (1, 2)),
        30,
        "both platform instances subscribed",
    )
    public = tmp_path / "platform-ack.pub.pem"
    assert all(f'platform_ack_key = "{public}"' in p.output() for p in instances)
    gateways = {f"gw{g}": tmp_path / f"gw{g}.db" for g in range(3)}
    expected = 0
    for gw, db in gateways.items():
        records = list(site_records(USCC, gw, meters=10, start_ns=START, periods=8))
        expected += len(records)
        fill_outbox(db, USCC, gw, records, batch_size=5)
    links = [gateway_link(t, db, gw, public) for gw, db in gateways.items()]
    tasks = [asyncio.create_task(s.run()) for s in links]
    try:
        await settle(links)
        # the gateways lose their acks (say, restored from a backup) and send everything again
        for db in gateways.values():
            forget_acks(db)
        await settle(links)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in instances:
            with contextlib.suppress(Exception):
                p.interrupt()
    store = PlatformStore(postgres.dsn)
    batches, records = store.counts()
    assert records == expected == 3 * 10 * 8
    assert batches == 3 * 16
    shares = store.by_instance()
    assert set(shares) == {"p1", "p2"}, shares  # both instances took part
    assert sum(shares.values()) == batches
    assert sum(s.counters.duplicates for s in links) == 3 * 16  # every re-send recognised
    assert sum(s.counters.acks for s in links) == 2 * 3 * 16
    assert all(s.counters.rejected == 0 for s in links)
    assert all(s.counters.acks_authenticated and not s.counters.bad_acks for s in links)


def forget_acks(db: Path) -> None:
    """As if the acks never came: everything pending again."""
    conn = sqlite3.connect(db, isolation_level=None)
    Outbox(conn)
    conn.execute("UPDATE outbox SET state='pending', acked_ns=NULL, ack_status=NULL")
    conn.close()


def test_postgres_refuses_what_it_cannot_store_with_the_reason(postgres: Postgres):
    """Text PostgreSQL cannot hold (a NUL) is rejected with the reason, not a crash."""
    import json

    from cloud_sync import AckStatus, build_readings_batch, reading_message
    from tests.unit.test_aggregation import reading

    store = PlatformStore(postgres.dsn)
    message = reading_message(1, reading(0, None, "bad\x00reason"))
    batch = json.dumps(build_readings_batch(USCC, "gw", [message])).encode()
    ack = store.receive(f"tanji/v1/{USCC}/gw/readings", batch)
    assert ack is not None
    assert ack.status is AckStatus.REJECTED
    assert "cannot store" in (ack.reason or "")
    ok = reading_message(2, reading(1, "1.00"))
    fine = json.dumps(build_readings_batch(USCC, "gw", [ok])).encode()
    assert store.receive(f"tanji/v1/{USCC}/gw/readings", fine).status is AckStatus.ACCEPTED
