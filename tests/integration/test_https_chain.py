"""The whole chain over HTTPS, on real processes: `tanji sim modbus`, `tanji sim platform`
listening with TLS (mutual: it requires a client certificate signed by the CA it is given) and
`tanji run` with `[platform] transport = "https"`, certificates made by simulators/pki.py.
Every record the gateway made reaches the platform once, every batch acked; the same store
sent over MQTT gives the platform the same records and totals. A gateway whose client
certificate the platform refuses says so in `tanji status`, loses nothing, and delivers
everything once its certificate is fixed. And `tanji demo --transport https` balances, raw
readings included."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cloud_sync import CloudSync, DeliveryConfig, HttpsConfig, LinkConfig, MqttConfig, Topics
from gateway.cli import app
from gateway.cli.demo_chain import run_demo
from gateway.cli.demo_site import DEMO_USCC, demo_site, write_site
from gateway.runtime.status import status_path_for
from gateway.store.sqlite import Store
from simulators.pki import CertificateAuthority, Issued
from simulators.platform import PlatformReceiver, PlatformStore, ack_signer, public_key_path
from tests.conftest import Mosquitto, free_port
from tests.support.procs import Proc, wait_until

METERS = 2
TOPICS = Topics("tanji/v1", DEMO_USCC, "demo-gw")


class HttpsChain:
    """Meter simulator, platform simulator (HTTPS only) and gateway as processes."""

    def __init__(self, tmp: Path, client: Issued | None = None) -> None:
        self.tmp = tmp
        self.pki = CertificateAuthority(tmp / "pki")
        server = self.pki.issue("platform", server=True)
        self.client = client or self.pki.issue("demo-gw", server=False)
        self.base, self.port = free_port(), free_port()
        ack_key = tmp / "platform-ack.key"
        ack_signer(ack_key)  # the platform's signing key, there before the gateway starts
        self.ack_pub = public_key_path(ack_key)
        self.write_site(self.client)
        self.meters = Proc(
            ["sim", "modbus", "--meters", str(METERS), "--base-port", str(self.base)],
            tmp / "meters.log",
        )
        self.platform = Proc(
            [
                "sim", "platform", "--no-mqtt", "--db", str(tmp / "platform.db"),
                "--ack-key", str(ack_key), "--https-port", str(self.port),
                "--https-cert", str(server.cert), "--https-key", str(server.key),
                "--https-client-ca", str(self.pki.cert_path),
            ],
            tmp / "platform.log",
        )  # fmt: skip
        self.gateway = Proc(["run", "-c", str(tmp / "site.toml")], tmp / "gateway.log")

    def link(self, client: Issued) -> dict[str, Any]:
        return {
            "url": f"https://127.0.0.1:{self.port}",
            "ca_file": str(self.pki.cert_path),
            "cert_file": str(client.cert),
            "key_file": str(client.key),
            "platform_ack_key": str(self.ack_pub),
        }

    def write_site(self, client: Issued) -> None:
        delivery = {"ack_timeout_s": 5.0, "batch_size": 2}
        site = demo_site(self.tmp, METERS, self.base, 1, 2, "5", delivery, https=self.link(client))
        write_site(self.tmp, site)

    def gateway_records(self) -> dict[str, dict[str, Any]]:
        rows = _rows(self.tmp / "gateway.db", "SELECT record_id, record_json FROM activity_records")
        return {rid: json.loads(text) for rid, text in rows}

    def outbox(self) -> list[str]:
        return [s for (s,) in _rows(self.tmp / "gateway.db", "SELECT state FROM outbox")]

    def status(self) -> dict[str, Any]:
        path = status_path_for(self.tmp / "gateway.db")
        return json.loads(path.read_text()) if path.exists() else {}

    def drain(self) -> None:
        """Send what the stopped gateway still had pending with its own delivery code."""
        link = HttpsConfig(**self.link(self.client))
        asyncio.run(_drain(self.tmp / "gateway.db", link))

    def stop_all(self) -> None:
        for p in (self.gateway, self.platform, self.meters):
            p.kill()


async def _drain(db: Path, link: LinkConfig) -> CloudSync:
    sync = CloudSync(db, TOPICS, link, "tanji-demo-gw", delivery=DeliveryConfig(backlog_rate=0))
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(60):
            while (await sync.stats()).pending:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return sync


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # its tables are not created yet
        return []
    finally:
        conn.close()


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["record_id"]: r for r in records}


def totals(records: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal]:
    """Per meter and point, the sum over periods of each period's latest revision."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        key = (r["meter_id"], r["point"], r["period_start"])
        if key not in latest or r["revision"] > latest[key]["revision"]:
            latest[key] = r
    out: dict[tuple[str, str], Decimal] = {}
    for (meter, point, _), r in latest.items():
        out[meter, point] = out.get((meter, point), Decimal(0)) + Decimal(r["quantity"])
    return out


def assert_platform_holds_the_gateways_records(chain: HttpsChain) -> PlatformStore:
    platform = PlatformStore(chain.tmp / "platform.db")
    theirs = platform.records(revisions=True)
    mine = chain.gateway_records()
    assert len(theirs) == len({r["record_id"] for r in theirs}), "a record twice"
    assert by_id(theirs) == mine  # the same records, content and all
    assert set(chain.outbox()) == {"acked"}, chain.outbox()
    assert totals(theirs) == totals(list(mine.values()))
    return platform


def test_a_site_over_https_delivers_what_mqtt_delivers_every_batch_acked(
    tmp_path: Path, mosquitto: Mosquitto
):
    chain = HttpsChain(tmp_path)
    try:
        for proc in (chain.meters, chain.platform, chain.gateway):
            proc.start()
        wait_until(lambda: chain.outbox().count("acked") >= 6, 90, "six batches acked")
        status = chain.status()["link"]
        assert status["connected"] is True, status
        assert status["acks_authenticated"] is True
        assert chain.gateway.interrupt() == 0, chain.gateway.output()[-3000:]
        chain.drain()
        chain.platform.interrupt()
    finally:
        chain.stop_all()
    platform = assert_platform_holds_the_gateways_records(chain)
    energy = {k: v for k, v in platform.totals().items() if k[1] == "active_energy_import"}
    assert len(energy) == METERS, energy  # both meters' energy arrived
    # the same store sent over MQTT (a real broker, the platform simulator's MQTT receiver)
    # gives the platform the same records and the same totals
    copy = tmp_path / "over-mqtt"
    copy.mkdir()
    shutil.copy(tmp_path / "gateway.db", copy / "gateway.db")
    with sqlite3.connect(copy / "gateway.db") as conn:
        conn.execute("UPDATE outbox SET state='pending', ack_status=NULL, acked_ns=NULL")
    asyncio.run(_over_mqtt(copy, mosquitto.url, tmp_path / "platform-ack.key"))
    over_mqtt = PlatformStore(copy / "platform.db")
    assert over_mqtt.totals() == platform.totals()
    assert by_id(over_mqtt.records(revisions=True)) == by_id(platform.records(revisions=True))


async def _over_mqtt(workdir: Path, broker_url: str, ack_key: Path) -> None:
    receiver = PlatformReceiver(
        workdir / "platform.db", MqttConfig(broker_url=broker_url), signer=ack_signer(ack_key)
    )
    task = asyncio.create_task(receiver.run())
    try:
        link = MqttConfig(broker_url=broker_url, platform_ack_key=public_key_path(ack_key))
        sync = await _drain(workdir / "gateway.db", link)
        assert (await sync.stats()).acked > 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_refused_client_certificate_is_reported_and_nothing_is_lost(tmp_path: Path):
    foreign = CertificateAuthority(tmp_path / "other", "other CA").issue("demo-gw", server=False)
    chain = HttpsChain(tmp_path, client=foreign)
    try:
        for proc in (chain.meters, chain.platform, chain.gateway):
            proc.start()
        wait_until(lambda: len(chain.outbox()) >= 3, 90, "three batches made")
        link = chain.status()["link"]
        assert link["connected"] is False
        assert link["connects"] == 0
        assert f"refused this gateway's client certificate {foreign.cert}" in link["last_error"]
        shown = CliRunner().invoke(app, ["status", "-c", str(tmp_path / "site.toml")])
        assert "PLATFORM LINK DOWN" in shown.output
        assert "refused this gateway's client certificate" in " ".join(shown.output.split())
        assert "refused in the TLS handshake" in chain.platform.output()
        assert PlatformStore(tmp_path / "platform.db").counts() == (0, 0)
        # the certificate fixed, the gateway restarted: everything goes
        assert chain.gateway.interrupt() == 0, chain.gateway.output()[-3000:]
        assert set(chain.outbox()) == {"pending"}  # nothing was dropped meanwhile
        chain.client = chain.pki.issue("demo-gw", server=False)
        chain.write_site(chain.client)
        chain.gateway.start()
        wait_until(lambda: chain.outbox().count("acked") >= 3, 60, "the waiting batches acked")
        assert chain.gateway.interrupt() == 0, chain.gateway.output()[-3000:]
        chain.drain()
        chain.platform.interrupt()
    finally:
        chain.stop_all()
    assert_platform_holds_the_gateways_records(chain)


def test_the_demo_over_https_balances_and_settles_every_batch(tmp_path: Path):
    result = CliRunner().invoke(
        app,
        ["demo", "--transport", "https", "--duration", "8", "--interval", "2", "--meters", "2",
         "--json", "--workdir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["totals_match"] is True
    assert summary["batches_pending"] == 0
    assert summary["batches_acked"] > 0
    assert summary["platform_records"] == summary["records_created"] > 0
    site = (tmp_path / "site.toml").read_text()
    assert 'transport = "https"' in site
    assert "[mqtt]" not in site


async def test_raw_readings_go_over_https_each_stored_reading_once(tmp_path: Path):
    summary = await run_demo(
        tmp_path,
        meters=2,
        interval_s=2,
        duration_s=6,
        mqtt_extra={"readings": True, "readings_batch_size": 7},
        transport="https",
    )
    assert summary.totals_match
    stored = Store(tmp_path / "gateway.db")
    try:
        mine = [
            (i, r.meter_id, r.point, str(r.ts_ns), None if r.value is None else str(r.value))
            for i, r in stored.readings_after(0, 10**6)
        ]
    finally:
        stored.close()
    theirs = [
        (r["seq"], r["meter_id"], r["point"], str(r["ts_ns"]), r["value"])
        for r in PlatformStore(tmp_path / "platform.db").readings()
    ]
    assert len(mine) > 20
    assert theirs == mine
