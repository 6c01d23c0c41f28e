"""Platform sync under faults, with real processes: `tanji sim modbus`, `tanji run` and
`tanji sim platform` talking through a real Mosquitto with mutual TLS, the platform's acks
signed and verified. The broker stops for
minutes, the gateway is SIGKILLed before acks and mid-publish, the platform dies, a TCP proxy
cuts the link mid-message or swallows it silently. Each test ends with the platform holding
exactly the gateway's records: none missing, none twice."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cloud_sync import CloudSync, DeliveryConfig, MqttConfig, Topics
from gateway.cli.demo_site import DEMO_USCC, demo_site, write_site
from gateway.runtime.status import STATUS_INTERVAL_S, status_path_for
from simulators.platform import ack_signer, public_key_path
from tests.conftest import BrokerTls, TlsBroker, free_port
from tests.support.mqtt import retained
from tests.support.procs import Proc, wait_until
from tests.support.proxy import TcpProxy

METERS = 2


class Chain:
    """Meter simulator, gateway and platform simulator as processes, on one TLS broker."""

    def __init__(self, tmp: Path, t: TlsBroker, broker_port: int, **mqtt: Any) -> None:
        self.tmp = tmp
        self.t = t
        base = free_port()
        ack_key = tmp / "platform-ack.key"
        ack_signer(ack_key)  # the platform's signing key, there before the gateway starts
        self.mqtt: dict[str, Any] = {
            "broker_url": f"mqtts://127.0.0.1:{broker_port}",
            "ca_file": str(t.ca.cert_path),
            "cert_file": str(t.gateway.cert),
            "key_file": str(t.gateway.key),
            "platform_ack_key": str(public_key_path(ack_key)),
            "ack_timeout_s": 5.0,
            "keepalive_s": 5,
            "publish_timeout_s": 5.0,
            "batch_size": 2,
            **mqtt,
        }
        self.site = write_site(tmp, demo_site(tmp, METERS, base, broker_port, 2, "5", self.mqtt))
        self.meters = Proc(
            ["sim", "modbus", "--meters", str(METERS), "--base-port", str(base)],
            tmp / "meters.log",
        )
        self.gateway = Proc(["run", "-c", str(tmp / "site.toml")], tmp / "gateway.log")
        self.platform = Proc(
            [
                "sim", "platform", "--broker", t.broker.url, "--db", str(tmp / "platform.db"),
                "--ca-file", str(t.ca.cert_path), "--cert-file", str(t.platform.cert),
                "--key-file", str(t.platform.key), "--ack-key", str(ack_key),
            ],
            tmp / "platform.log",
        )  # fmt: skip

    # --- what each side holds (read from their databases; WAL lets us read while they run)

    def gateway_records(self) -> set[str]:
        return set(_column(self.tmp / "gateway.db", "SELECT record_id FROM activity_records"))

    def platform_records(self) -> list[str]:
        return _column(self.tmp / "platform.db", "SELECT record_id FROM records")

    def acked(self) -> int:
        return len(
            _column(self.tmp / "gateway.db", "SELECT batch_id FROM outbox WHERE state='acked'")
        )

    def link_up(self, after_ns: int) -> bool | None:
        """Whether the link was up, by a status written after `after_ns` (None: none yet)."""
        status = self.status()
        return bool(status["link"]["connected"]) if int(status["written_ns"]) > after_ns else None

    def status(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(status_path_for(self.site.store.path).read_text())
        return loaded

    def start(self) -> None:
        self.meters.start()
        self.platform.start()
        self.gateway.start()

    def finish(self) -> None:
        """Stop the gateway (Ctrl-C), send what it still had pending with the gateway's own
        sync code, stop everything, then compare both sides."""
        assert self.gateway.interrupt() == 0, self.gateway.output()[-3000:]
        # the site's [mqtt] (its policy keys moved to [delivery]), to the broker as it is now
        config = self.site.mqtt.model_copy(update={"broker_url": self.t.broker.url})
        asyncio.run(_drain(self.tmp / "gateway.db", config, self.site.delivery))
        self.platform.interrupt()
        self.meters.kill()
        gateway, platform = self.gateway_records(), self.platform_records()
        assert len(platform) == len(set(platform)), "a record twice at the platform"
        missing = gateway - set(platform)
        unknown = set(platform) - gateway
        assert not missing, f"{len(missing)} records never reached the platform"
        assert not unknown, f"{len(unknown)} records at the platform the gateway never made"
        states = _column(self.tmp / "gateway.db", "SELECT DISTINCT state FROM outbox")
        assert states == ["acked"], states
        link = self.status()["link"]  # the platform's acks were signed and verified
        assert link["acks_authenticated"] is True
        assert "unauthenticated" not in link["acks_dropped"], link

    def stop_all(self) -> None:
        for p in (self.gateway, self.platform, self.meters):
            p.kill()


def retained_status(t: TlsBroker) -> dict[str, Any]:
    """The gateway's retained status message, as a platform subscribing now sees it."""
    config = MqttConfig(
        broker_url=t.broker.url,
        ca_file=t.ca.cert_path,
        cert_file=t.platform.cert,
        key_file=t.platform.key,
    )
    return asyncio.run(retained(config, Topics("tanji/v1", DEMO_USCC, "demo-gw").status))


def _column(db: Path, sql: str) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in conn.execute(sql)]
    except sqlite3.OperationalError:  # its tables are not created yet
        return []
    finally:
        conn.close()


async def _drain(db: Path, config: MqttConfig, delivery: DeliveryConfig) -> None:
    topics = Topics("tanji/v1", DEMO_USCC, "demo-gw")
    sync = CloudSync(db, topics, config, "tanji-demo-gw", delivery=delivery)
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(60):
            while (await sync.stats()).pending:  # noqa: ASYNC110  (the broker's pace)
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.2)  # aiomqtt cancels its housekeeping task on the next turns


@pytest.mark.timeout(400)
def test_broker_down_for_two_minutes(tmp_path: Path, tls_mosquitto: TlsBroker):
    t = tls_mosquitto
    chain = Chain(tmp_path, t, t.broker.port)
    chain.start()
    try:
        wait_until(lambda: chain.acked() >= 3, 60, "first batches acked")
        t.broker.stop()
        down = time.monotonic()
        made_before = len(chain.gateway_records())
        wait_until(lambda: not chain.status()["link"]["connected"], 30, "gateway notices")
        # the operator sees it: tanji status exits 1 and names the link
        shown = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "-c", str(tmp_path / "site.toml")],
            capture_output=True,
            text=True,
        )
        assert shown.returncode == 1
        assert "PLATFORM LINK DOWN" in shown.stdout, shown.stdout
        time.sleep(max(0.0, 120 - (time.monotonic() - down)))
        assert len(chain.gateway_records()) > made_before + 20  # the gateway kept working
        backlog = chain.status()["outbox"]
        assert backlog["pending_batches"] > 10
        assert backlog["oldest_pending_age_s"] > 60
        t.broker.start()
        wait_until(lambda: chain.status()["outbox"]["pending_batches"] <= 2, 90, "drained")
        chain.finish()
    finally:
        chain.stop_all()


def test_gateway_killed_before_acks_and_mid_publish_platform_down(
    tmp_path: Path, tls_mosquitto: TlsBroker
):
    t = tls_mosquitto
    rng = random.Random(8)
    chain = Chain(tmp_path, t, t.broker.port, backlog_rate=2.0, max_in_flight=4)
    chain.meters.start()
    chain.gateway.start()  # the platform is down: batches are published and never acked
    try:
        wait_until(lambda: len(chain.gateway_records()) >= 20, 60, "records made")
        assert chain.acked() == 0
        assert retained_status(t)["state"] == "online"
        chain.gateway.kill()  # kill -9 with batches published but not acked
        # the broker published the gateway's last will: the platform knows it died
        wait_until(lambda: retained_status(t).get("reason") == "lost", 30, "last will")
        chain.gateway.start()
        chain.platform.start()
        for _ in range(3):  # kill -9 at random moments while the backlog drains
            wait_until(lambda: chain.acked() > 0, 60, "acks flowing")
            time.sleep(rng.uniform(0.2, 1.5))
            chain.gateway.kill()
            chain.gateway.start()
        chain.platform.kill()  # and the platform dies while the gateway runs
        time.sleep(6)
        chain.platform.start()
        wait_until(lambda: chain.status()["outbox"]["pending_batches"] <= 2, 90, "drained")
        chain.finish()
    finally:
        chain.stop_all()


def test_link_cut_mid_message_and_silently_dead(tmp_path: Path, tls_mosquitto: TlsBroker):
    t = tls_mosquitto
    proxy = TcpProxy(t.broker.port)
    chain = Chain(tmp_path, t, proxy.port)
    chain.start()
    rng = random.Random(5)
    try:
        for _ in range(4):  # cut the TCP stream inside a message (a TLS record, a publish)
            wait_until(lambda: chain.acked() >= 2, 60, "acks flowing")
            count = proxy.connections
            proxy.cut_after(rng.randint(1, 400))
            wait_until(lambda: proxy.connections > count, 60, "reconnected after the cut")  # noqa: B023
        assert proxy.cuts == 4
        # a link that goes silent without closing (a dead router): noticed by keep-alive
        bound = chain.site.mqtt.dead_link_bound_s
        settled = time.time_ns()
        wait_until(lambda: chain.link_up(after_ns=settled) is True, 60, "connected again")
        before = proxy.connections
        proxy.blackhole = True
        silent, silent_ns = time.monotonic(), time.time_ns()
        wait_until(lambda: chain.link_up(after_ns=silent_ns) is False, 3 * bound, "noticed")
        noticed_after = time.monotonic() - silent
        proxy.blackhole = False
        wait_until(lambda: proxy.connections > before, 60, "reconnected")
        # within the stated bound, give or take the status file's interval and a second
        assert noticed_after <= bound + STATUS_INTERVAL_S + 1.0
        wait_until(lambda: chain.status()["outbox"]["pending_batches"] <= 2, 60, "drained")
        chain.finish()
    finally:
        chain.stop_all()
        proxy.close()


def test_expired_broker_certificate_then_renewed(tmp_path: Path, tls_mosquitto: TlsBroker):
    """TLS fails on an expired broker certificate: the gateway says so in `tanji status`,
    never falls back to plaintext, keeps everything; once the certificate is renewed it
    delivers all of it, once."""
    t = tls_mosquitto
    good = t.broker.tls
    assert good is not None
    t.broker.stop()
    t.broker.tls = BrokerTls(good.ca, t.ca.issue("expired-broker", server=True, expired=True))
    t.broker.start()
    chain = Chain(tmp_path, t, t.broker.port)
    chain.start()
    try:
        wait_until(lambda: len(chain.gateway_records()) >= 6, 60, "records made")
        wait_until(  # the status file is rewritten every few seconds
            lambda: "certificate has expired" in (chain.status()["link"]["last_error"] or ""),
            30,
            "the expired certificate named in tanji status",
        )
        assert not chain.status()["link"]["connected"]
        assert chain.acked() == 0
        assert not chain.platform_records()
        t.broker.stop()
        t.broker.tls = good  # renewed
        t.broker.start()
        wait_until(lambda: chain.acked() >= 3, 90, "delivering after the renewal")
        wait_until(lambda: chain.status()["outbox"]["pending_batches"] <= 2, 90, "drained")
        chain.finish()
    finally:
        chain.stop_all()
