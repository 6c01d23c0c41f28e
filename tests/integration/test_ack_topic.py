"""The ack topic against a real Mosquitto: poison (malformed, oversized, retained) next to the
platform's real acks does not stop the gateway's ack reader, the real acks settle every
batch on one connection; forged acks for real batch ids settle nothing; the contract's broker
ACL (deploy/mosquitto/tanji-acl.conf) carries the whole chain and keeps a gateway's account
off its ack topic."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import pytest

from cloud_sync import Ack, AckStatus, CloudSync, DeliveryConfig, MqttConfig, Topics
from cloud_sync.acks import AckSigner
from gateway.cli.demo_chain import run_demo
from gateway.cli.demo_site import DEMO_USCC
from gateway.periods import datetime_to_ns
from simulators.backlog import fill_outbox, site_records
from simulators.platform import PlatformReceiver, ack_signer, public_key_path
from tests.conftest import Mosquitto, _mosquitto_binary, require

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
    ack("f" * 64),  # well formed, but not signed by the platform
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
    signer = ack_signer(tmp_path / "platform-ack.key")
    config = MqttConfig(
        broker_url=mosquitto.url, platform_ack_key=public_key_path(tmp_path / "platform-ack.key")
    )
    platform = PlatformReceiver(
        tmp_path / "platform.db", MqttConfig(broker_url=mosquitto.url), signer=signer
    )
    subscribed, stop = asyncio.Event(), asyncio.Event()
    mallory = asyncio.create_task(poison_publisher(mosquitto.url, subscribed, stop))
    await asyncio.sleep(0.5)  # the retained poison is in place before the gateway subscribes
    sync = CloudSync(
        db, TOPICS, config, f"tanji-{GW}", delivery=DeliveryConfig(ack_timeout_s=5, backlog_rate=0)
    )
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
    assert c.acks_dropped["unauthenticated"] == rounds  # well formed, but unsigned
    assert c.bad_acks == sum(c.acks_dropped.values())


async def forger(url: str, stop: asyncio.Event) -> int:
    """Reads batch ids off every gateway's activity topic (the platform is down) and answers
    each with a forged `accepted` (unsigned) and a forged `rejected` (signed with a key of its
    own). Returns how many batches it answered."""
    mallory = AckSigner.generate()
    answered: set[str] = set()
    config = MqttConfig(broker_url=url)
    async with aiomqtt.Client(**config.client_kwargs("forger")) as client:
        await client.subscribe("tanji/v1/+/+/activity", qos=1)
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.2):
                    message = await anext(client.messages)
            except TimeoutError:
                continue
            assert isinstance(message.payload, bytes)
            batch = json.loads(gzip.decompress(message.payload))
            ack_topic = message.topic.value.rsplit("/", 1)[0] + "/ack"
            bid = batch["batch_id"]
            await client.publish(ack_topic, ack(bid), qos=1)
            forged = mallory.sign(Ack(bid, AckStatus.REJECTED, "forged"), USCC, GW, time.time_ns())
            await client.publish(ack_topic, forged, qos=1)
            answered.add(bid)
    return len(answered)


async def test_forged_acks_neither_deliver_nor_dead_letter_a_batch(
    tmp_path: Path, mosquitto: Mosquitto
):
    """The attack of issue 15: with the platform down, acks forged for batch ids read off
    `.../activity` marked a batch delivered (its records never reached the platform) and
    dead-lettered another. Signed acks: the batches wait for the platform, which gets all."""
    db = tmp_path / "gw.db"
    records = list(site_records(USCC, GW, meters=3, start_ns=START, periods=4))
    ids = fill_outbox(db, USCC, GW, records, batch_size=2)
    key = tmp_path / "platform-ack.key"
    config = MqttConfig(broker_url=mosquitto.url, platform_ack_key=public_key_path(key))
    signer = ack_signer(key)
    stop = asyncio.Event()
    mallory = asyncio.create_task(forger(mosquitto.url, stop))
    await asyncio.sleep(0.3)
    sync = CloudSync(
        db, TOPICS, config, f"tanji-{GW}", delivery=DeliveryConfig(ack_timeout_s=1, backlog_rate=0)
    )
    link = asyncio.create_task(sync.run())
    platform = PlatformReceiver(
        tmp_path / "platform.db", MqttConfig(broker_url=mosquitto.url), signer=signer
    )
    try:
        async with asyncio.timeout(60):
            # every batch is sent (and re-sent after 1 s) and answered by forgeries only
            while sync.counters.acks_dropped.get("unauthenticated", 0) < 4 * len(ids):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            stats = await sync.stats()
            assert (stats.pending, stats.acked, stats.rejected) == (len(ids), 0, 0)
            stop.set()
            answered = await mallory
            assert answered == len(ids)
            served = asyncio.create_task(platform.run())  # the platform comes back
            while (await sync.stats()).pending:  # noqa: ASYNC110  (the broker's pace)
                await asyncio.sleep(0.2)
            served.cancel()
    finally:
        stop.set()
        link.cancel()
        await asyncio.gather(link, mallory, return_exceptions=True)
    stats = await sync.stats()
    assert (stats.acked, stats.rejected) == (len(ids), 0)
    assert platform.store.counts() == (len(ids), len(records))  # everything really arrived
    assert set(sync.counters.acks_dropped) == {"unauthenticated"}


ACL = Path(__file__).parents[2] / "deploy" / "mosquitto" / "tanji-acl.conf"
PASSWORDS = {"tanji-platform": "platform-pw", f"{DEMO_USCC}/demo-gw": "gateway-pw"}


@pytest.fixture
def acl_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto with password logins and the contract's ACL (deploy/mosquitto)."""
    broker = Mosquitto(
        require("mosquitto", _mosquitto_binary()),
        tmp_path / "acl-broker",
        users=PASSWORDS,
        extra=(f"acl_file {ACL}",),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def login(tmp_path: Path, user: str) -> dict[str, Any]:
    secret = tmp_path / f"{user.replace('/', '_')}.pw"
    secret.write_text(PASSWORDS[user] + "\n")
    return {"username": user, "password_file": str(secret)}


async def test_the_chain_runs_under_the_contract_acl_and_a_gateway_cannot_publish_acks(
    tmp_path: Path, acl_mosquitto: Mosquitto
):
    broker = acl_mosquitto
    platform_login = login(tmp_path, "tanji-platform")
    gateway_login = login(tmp_path, f"{DEMO_USCC}/demo-gw")
    summary = await run_demo(
        tmp_path / "demo",
        meters=2,
        interval_s=2,
        duration_s=6,
        broker_port=broker.port,
        mqtt_extra=gateway_login,
        platform_mqtt=MqttConfig(broker_url=broker.url, **platform_login),
        opcua=False,
    )
    # everything the contract needs passes the ACL: batches up, signed acks down
    assert summary.records_created > 2
    assert summary.platform_records == summary.records_created
    assert summary.batches_pending == 0
    # the gateway's own account: it reads its ack topic, but cannot publish there
    topics = Topics("tanji/v1", DEMO_USCC, "demo-gw")
    gateway = MqttConfig(broker_url=broker.url, **gateway_login)
    platform = MqttConfig(broker_url=broker.url, **platform_login)
    fake = ack("f" * 64)
    async with (
        aiomqtt.Client(**gateway.client_kwargs("acl-gateway") | {"clean_start": True}) as gw,
        aiomqtt.Client(**platform.client_kwargs("acl-platform")) as pf,
    ):
        await gw.subscribe(topics.ack, qos=1)
        await gw.publish(topics.ack, fake, qos=1)  # refused by the broker
        await gw.publish("tanji/v1/91350100M000100Y43/other-gw/activity", b"{}", qos=1)
        await pf.publish(topics.ack, b"from the platform", qos=1)
        async with asyncio.timeout(5):
            received = await anext(gw.messages)
        assert received.payload == b"from the platform"  # the first and only one
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await anext(gw.messages)
    log = broker.log()
    assert "Denied PUBLISH from acl-gateway" in log
    assert topics.ack in log.split("Denied PUBLISH from acl-gateway", 1)[1].splitlines()[0]
