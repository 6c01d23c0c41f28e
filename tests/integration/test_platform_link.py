"""The platform link against a real Mosquitto with TLS: mutual TLS and MQTT 5 end to end,
birth and offline status, passwords from a file, and the refusals (expired or foreign
server certificate, no client certificate, wrong password) with their words."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from cloud_sync import CloudSync, DeliveryConfig, MqttConfig, Topics
from gateway.cli.demo_chain import run_demo
from gateway.cli.demo_site import DEMO_USCC
from gateway.cli.demo_summary import DemoSummary
from gateway.store.sqlite import Store
from simulators.pki import CertificateAuthority
from simulators.platform import PlatformStore
from tests.conftest import BrokerTls, Mosquitto, TlsBroker, _mosquitto_binary, require
from tests.support.mqtt import retained


def tls_settings(t: TlsBroker, who: str = "gateway", **extra: Any) -> dict[str, Any]:
    issued = t.gateway if who == "gateway" else t.platform
    return {
        "broker_url": t.broker.url,
        "ca_file": str(t.ca.cert_path),
        "cert_file": str(issued.cert),
        "key_file": str(issued.key),
        **extra,
    }


async def tls_demo(tmp_path: Path, t: TlsBroker, seconds: float, **extra: Any) -> DemoSummary:
    """The demo chain over mutual TLS: gateway and platform each with their certificate."""
    return await run_demo(
        tmp_path,
        meters=2,
        interval_s=2,
        duration_s=seconds,
        broker_port=t.broker.port,
        mqtt_extra=tls_settings(t, **extra),
        platform_mqtt=MqttConfig(**tls_settings(t, "platform")),
    )


async def test_mutual_tls_chain_delivers_everything_and_announces_itself(
    tmp_path: Path, tls_mosquitto: TlsBroker
):
    t = tls_mosquitto
    summary = await tls_demo(tmp_path, t, 8)
    assert summary.records_created > 2
    assert summary.platform_records == summary.records_created
    assert summary.batches_pending == 0
    assert summary.totals_match
    # the gateway said goodbye: retained offline/stopped replaces the birth message
    status = await retained(
        MqttConfig(**tls_settings(t, "platform")),
        Topics("tanji/v1", DEMO_USCC, "demo-gw").status,
    )
    assert status["state"] == "offline"
    assert status["reason"] == "stopped"
    assert status["contract"] == 2
    assert status["gateway_id"] == "demo-gw"


async def run_sync_briefly(tmp_path: Path, config: MqttConfig, seconds: float = 3.0) -> CloudSync:
    topics = Topics("tanji/v1", DEMO_USCC, "gw")
    sync = CloudSync(tmp_path / "outbox.db", topics, config, "gw", delivery=DeliveryConfig())
    task = asyncio.create_task(sync.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return sync


async def test_an_expired_broker_certificate_is_refused_by_name(
    tmp_path: Path, pki: CertificateAuthority
):
    expired = BrokerTls(pki.cert_path, pki.issue("old-broker", server=True, expired=True))
    broker = Mosquitto(require("mosquitto", _mosquitto_binary()), tmp_path / "b", tls=expired)
    broker.start()
    try:
        client = pki.issue("gateway", server=False)
        config = MqttConfig(
            broker_url=broker.url,
            ca_file=pki.cert_path,
            cert_file=client.cert,
            key_file=client.key,
        )
        sync = await run_sync_briefly(tmp_path, config)
    finally:
        broker.kill()
    assert sync.counters.connects == 0
    error = sync.counters.last_error or ""
    assert "failed verification" in error, error
    assert "certificate has expired" in error, error


async def test_a_broker_certificate_from_another_ca_is_refused(
    tmp_path: Path, tls_mosquitto: TlsBroker
):
    other = CertificateAuthority(tmp_path / "other", "another CA")
    config = MqttConfig(**tls_settings(tls_mosquitto) | {"ca_file": str(other.cert_path)})
    sync = await run_sync_briefly(tmp_path, config)
    assert sync.counters.connects == 0
    error = sync.counters.last_error or ""
    assert "failed verification" in error, error
    assert str(other.cert_path) in error, error
    assert "self-signed certificate in certificate chain" in error  # not our CA


async def test_no_client_certificate_no_connection(tmp_path: Path, tls_mosquitto: TlsBroker):
    settings = tls_settings(tls_mosquitto)
    del settings["cert_file"], settings["key_file"]
    sync = await run_sync_briefly(tmp_path, MqttConfig(**settings, publish_timeout_s=1.0))
    assert sync.counters.connects == 0
    # TLS 1.3 refuses the missing certificate after the handshake: the reason is kept
    assert "CERTIFICATE_REQUIRED" in (sync.counters.last_error or ""), sync.counters


async def test_plaintext_against_a_tls_listener_never_connects(
    tmp_path: Path, tls_mosquitto: TlsBroker
):
    config = MqttConfig(broker_url=f"mqtt://127.0.0.1:{tls_mosquitto.broker.port}")
    sync = await run_sync_briefly(tmp_path, config)
    assert sync.counters.connects == 0


async def test_password_from_a_file_and_a_wrong_one(tmp_path: Path, pki: CertificateAuthority):
    tls = BrokerTls(pki.cert_path, pki.issue("broker", server=True), require_certificate=False)
    broker = Mosquitto(
        require("mosquitto", _mosquitto_binary()),
        tmp_path / "b",
        tls=tls,
        users={"gw-0001": "s3cret-Pa55"},
    )
    broker.start()
    (tmp_path / "good").write_text("s3cret-Pa55\n")
    (tmp_path / "bad").write_text("guess\n")
    try:
        results = {}
        for name in ("good", "bad"):
            config = MqttConfig(
                broker_url=broker.url,
                ca_file=pki.cert_path,
                username="gw-0001",
                password_file=tmp_path / name,
            )
            (tmp_path / f"db-{name}").mkdir()
            results[name] = await run_sync_briefly(tmp_path / f"db-{name}", config, 2.0)
    finally:
        broker.kill()
    assert results["good"].counters.connects == 1
    assert results["bad"].counters.connects == 0
    assert "s3cret" not in broker.log()
    assert "guess" not in (results["bad"].counters.last_error or "")


def test_tls_files_with_a_plaintext_url_are_a_configuration_error(tmp_path: Path):
    with pytest.raises(ValueError, match="use mqtts://"):
        MqttConfig(broker_url="mqtt://127.0.0.1:1883", ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValueError, match="no credentials in the URL"):
        MqttConfig(broker_url="mqtts://user:pw@127.0.0.1:8883")
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        MqttConfig(broker_url="mqtts://127.0.0.1", cert_file=tmp_path / "c.pem")


def test_unreadable_tls_files_name_the_field_and_the_file(tmp_path: Path):
    """As under [https] (cloud_sync/tls.py: one TlsFiles for both): each problem names the
    field and the file, in the operating system's words."""
    (tmp_path / "gw.pem").write_text("not a certificate")
    missing = tmp_path / "gw.key"
    config = MqttConfig(
        broker_url="mqtts://127.0.0.1:8883",
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "gw.pem",
        key_file=missing,
    )
    assert config.problems() == [f"ca_file {tmp_path / 'ca.pem'}: No such file or directory"]
    config = config.model_copy(update={"ca_file": CertificateAuthority(tmp_path / "pki").cert_path})
    assert config.problems() == [f"key_file {missing}: No such file or directory"]
    missing.write_text("not a key")
    (problem,) = config.problems()
    assert problem.startswith(f"cert_file {tmp_path / 'gw.pem'} / key_file {missing}: "), problem


async def test_raw_readings_stream_delivers_every_stored_reading_once(
    tmp_path: Path, tls_mosquitto: TlsBroker
):
    summary = await tls_demo(tmp_path, tls_mosquitto, 6, readings=True, readings_batch_size=7)
    assert summary.totals_match
    stored = Store(tmp_path / "gateway.db")
    try:
        mine = [
            (i, r.meter_id, r.point, str(r.ts_ns), r.value)
            for i, r in stored.readings_after(0, 10**6)
        ]
    finally:
        stored.close()
    theirs = [
        (r["seq"], r["meter_id"], r["point"], str(r["ts_ns"]), r["value"])
        for r in PlatformStore(tmp_path / "platform.db").readings()
    ]
    assert len(mine) > 20
    assert theirs == [(i, m, p, ts, None if v is None else str(v)) for i, m, p, ts, v in mine]


def test_platform_simulator_options_are_checked_before_it_starts(tmp_path: Path):
    from typer.testing import CliRunner

    from gateway.cli import app

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["sim", "platform", *args])
        return result.exit_code, result.output

    code, out = run("--dsn", "postgresql://u:hunter2@127.0.0.1:1/x")
    assert code == 2
    assert "--dsn needs --ack-key FILE" in out  # instances share one signing key
    code, out = run(
        "--dsn", "postgresql://u:hunter2@127.0.0.1:1/x", "--ack-key", str(tmp_path / "k")
    )
    assert code == 2
    assert "u:***@127.0.0.1" in out
    assert "hunter2" not in out
    (tmp_path / "junk.key").write_text("junk")
    code, out = run("--db", str(tmp_path / "p.db"), "--ack-key", str(tmp_path / "junk.key"))
    assert code == 2
    assert "ack signing key" in out
    assert "junk.key: cannot be read" in " ".join(out.split())
    code, out = run("--broker", "mqtts://127.0.0.1:1", "--ca-file", str(tmp_path / "none.pem"))
    assert code == 2
    assert f"ca_file {tmp_path / 'none.pem'}" in out
    code, out = run("--group", "platform")
    assert code == 2
    assert "--client-id of its own" in out
    assert "Traceback" not in out


def test_password_from_the_environment_and_its_absence_named(monkeypatch: pytest.MonkeyPatch):
    from cloud_sync import TransportError

    config = MqttConfig(
        broker_url="mqtts://127.0.0.1:8883", username="gw", password_env="TANJI_TEST_PW"
    )
    monkeypatch.delenv("TANJI_TEST_PW", raising=False)
    with pytest.raises(TransportError, match="environment variable TANJI_TEST_PW is not set"):
        config.password()
    monkeypatch.setenv("TANJI_TEST_PW", "from-env")
    assert config.client_kwargs("gw")["password"] == "from-env"
    assert "from-env" not in repr(config)  # the setting names the variable, not the secret
