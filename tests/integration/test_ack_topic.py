"""The ack topic against a real Mosquitto: poison (malformed, oversized, retained) next to the
platform's real acks does not stop the gateway's ack reader; the real acks settle every
batch on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt

from cloud_sync import CloudSync, MqttConfig, Topics
from gateway.periods import datetime_to_ns
from simulators.backlog import fill_outbox, site_records
from simulators.platform import PlatformReceiver
from tests.conftest import Mosquitto

USCC = "91320000MA1TANJ0D7"
GW = "gw-poisoned"
START = datetime_to_ns(datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Shanghai")))
TOPICS = Topics("tanji/v1", USCC, GW)


def ack(batch_id: object, status: object = "accepted", **extra: object) -> bytes:
    return json.dumps(
        {"schema": "tanji.ack/1", "batch_id": batch_id, "status": status, **extra}
    ).encode()


# what crashed the reader before (issue 15), and other kinds of junk
POISON = [
    b'{"schema": "tanji.ack/1", "batch_id": ' + b"7" * 5000 + b', "status": "accepted"}',
    ack("\udc00"),
    ack("b" * 64, "rejected", reason="\ud800"),
    b"\xff\xfe not even text",
    b"[]",
    ack(17),
    ack("f" * 64),  # well formed, for no batch of this gateway
    ack("x", extra="field"),
]
BIG = ack("e" * 64, "rejected", reason="x" * 10_000_000)  # 10 MB


async def poison_publisher(url: str, subscribed: asyncio.Event, stop: asyncio.Event) -> int:
    """Leaves a lone-surrogate ack retained on the gateway's ack topic; once the gateway has
    subscribed, publishes 10 MB there and then the poison, round after round, until stopped.
    Returns the rounds published."""
    config = MqttConfig(broker_url=url)
    rounds = 0
    async with aiomqtt.Client(**config.client_kwargs("mallory")) as client:
        await client.publish(TOPICS.ack, ack("\udc00"), qos=1, retain=True)
        await subscribed.wait()
        await client.publish(TOPICS.ack, BIG, qos=1)
        while not stop.is_set():
            for payload in POISON:
                await client.publish(TOPICS.ack, payload, qos=1)
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
        await client.publish(TOPICS.ack, b"", qos=1, retain=True)  # clears the retained one
    return rounds


async def test_poison_on_the_ack_topic_does_not_stop_delivery(tmp_path: Path, mosquitto: Mosquitto):
    db = tmp_path / "gw.db"
    records = list(site_records(USCC, GW, meters=5, start_ns=START, periods=8))
    ids = fill_outbox(db, USCC, GW, records, batch_size=2)
    config = MqttConfig(broker_url=mosquitto.url, ack_timeout_s=5, backlog_rate=0)
    platform = PlatformReceiver(tmp_path / "platform.db", MqttConfig(broker_url=mosquitto.url))
    subscribed, stop = asyncio.Event(), asyncio.Event()
    mallory = asyncio.create_task(poison_publisher(mosquitto.url, subscribed, stop))
    await asyncio.sleep(0.5)  # the retained poison is in place before the gateway subscribes
    sync = CloudSync(db, TOPICS, config, f"tanji-{GW}")
    tasks = [asyncio.create_task(t) for t in (platform.run(), sync.run())]
    try:
        async with asyncio.timeout(60):
            while not sync.counters.acks_dropped.get("retained"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            subscribed.set()
            while (await sync.stats()).pending:  # noqa: ASYNC110  (the broker's pace)
                await asyncio.sleep(0.2)
            # poison keeps coming after the last batch settled: the reader is still alive
            dropped = sync.counters.bad_acks
            while sync.counters.bad_acks < dropped + 3 * len(POISON):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        rounds = await mallory
        await asyncio.sleep(0.5)  # the last rounds reach the gateway
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats = await sync.stats()
    assert stats.acked == len(ids)
    assert platform.store.counts() == (len(ids), len(records))
    c = sync.counters
    assert (c.connects, c.disconnects) == (1, 0), c.last_error  # never knocked off the link
    assert c.acks_dropped["retained"] == 1
    assert c.acks_dropped["oversized"] == 1
    assert c.acks_dropped["malformed"] == 7 * rounds + 1  # + the empty one clearing the retained
    assert c.acks_dropped["unknown-batch"] == rounds
    assert c.bad_acks == sum(c.acks_dropped.values())
