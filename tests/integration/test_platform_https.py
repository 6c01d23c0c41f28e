"""The platform simulator's HTTPS binding on a real TLS socket: batches in, signed acks out,
the same rules as over MQTT (one desk, one store), mutual TLS enforced in the handshake, and
each way of being wrong answered with its status code."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cloud_sync import AckStatus, build_batch, build_readings_batch, reading_message
from cloud_sync.acks import AckKeys, AckSigner, read_ack
from simulators import platform_https
from simulators.pki import CertificateAuthority, Issued
from simulators.platform import PlatformDesk, PlatformStore
from simulators.platform_https import HttpsSettings, HttpsSetupError, PlatformHttps
from tests.support.procs import Proc, wait_until
from tests.unit.test_aggregation import reading
from tests.unit.test_contract import USCC, records


@dataclass
class Listening:
    server: PlatformHttps
    pki: CertificateAuthority
    gateway: Issued
    keys: AckKeys

    def client(self, cert: Issued | None = None, ca: Path | None = None) -> httpx.AsyncClient:
        ctx = ssl.create_default_context(cafile=str(ca or self.pki.cert_path))
        if cert is not None:
            ctx.load_cert_chain(str(cert.cert), str(cert.key))
        return httpx.AsyncClient(base_url=self.server.url, verify=ctx, timeout=10.0)


@pytest.fixture
async def platform(tmp_path: Path, pki: CertificateAuthority) -> AsyncIterator[Listening]:
    server_cert = pki.issue("platform-https", server=True)
    signer = AckSigner.generate()
    desk = PlatformDesk(PlatformStore(tmp_path / "platform.db"), signer)
    settings = HttpsSettings(server_cert.cert, server_cert.key, pki.cert_path, port=0)
    server = PlatformHttps(desk, settings)
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Listening(
            server, pki, pki.issue("gw", server=False), AckKeys.from_pem(signer.public_pem())
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def activity_path(gateway_id: str = "gw") -> str:
    return f"/{USCC}/{gateway_id}/activity"


async def test_a_batch_is_stored_once_and_acked_signed(platform: Listening):
    batch = build_batch(USCC, "gw", records())
    body = json.dumps(batch).encode()
    async with platform.client(platform.gateway) as client:
        first = await client.post(activity_path(), content=body)
        again = await client.post(  # the same content gzip-compressed: the same batch
            activity_path(),
            content=gzip.compress(body),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
    assert first.status_code == again.status_code == 200
    acks = [read_ack(r.content, USCC, "gw", platform.keys) for r in (first, again)]
    assert [a.status for a in acks] == [AckStatus.ACCEPTED, AckStatus.DUPLICATE]
    assert {a.batch_id for a in acks} == {batch["batch_id"]}
    assert platform.server.desk.store.counts() == (1, 2)
    assert platform.server.counters.connections == 1  # kept alive between the two requests


async def test_readings_and_refusals_follow_the_mqtt_rules(platform: Listening):
    tampered = build_batch(USCC, "gw", records())
    tampered["records"][0]["quantity"] = "999.99"
    mine = build_batch(USCC, "gw", records())
    readings = build_readings_batch(USCC, "gw", [reading_message(1, reading(0, "1.00"))])
    async with platform.client(platform.gateway) as client:
        refused = await client.post(activity_path(), content=json.dumps(tampered).encode())
        misaddressed = await client.post(  # posted for another gateway
            activity_path("gw-2"), content=json.dumps(mine).encode()
        )
        garbage = await client.post(activity_path(), content=b"\xff\x00not json")
        raw = await client.post(f"/{USCC}/gw/readings", content=json.dumps(readings).encode())
    ack = read_ack(refused.content, USCC, "gw", platform.keys)
    assert (refused.status_code, ack.status) == (200, AckStatus.REJECTED)
    assert "batch_id does not match the content" in (ack.reason or "")
    ack = read_ack(misaddressed.content, USCC, "gw-2", platform.keys)  # addressed as posted
    assert ack.status is AckStatus.REJECTED
    assert ack.reason == "topic or path does not match the batch"
    assert garbage.status_code == 400  # no batch id: nothing an ack could name
    assert "no ack" in garbage.json()["error"]
    ack = read_ack(raw.content, USCC, "gw", platform.keys)
    assert (ack.status, ack.batch_id) == (AckStatus.ACCEPTED, readings["batch_id"])
    assert platform.server.desk.store.counts() == (0, 0)
    assert [r["seq"] for r in platform.server.desk.store.readings()] == [1]


async def test_wrong_requests_get_their_status_codes(
    platform: Listening, monkeypatch: pytest.MonkeyPatch
):
    batch = json.dumps(build_batch(USCC, "gw", records())).encode()
    async with platform.client(platform.gateway) as client:
        outside = f"https://127.0.0.1:{platform.server.port}/v2/{USCC}/gw/activity"
        assert (await client.post(outside, content=batch)).status_code == 404
        # an address that names no gateway: rejected, but no ack can be addressed (as MQTT)
        assert (await client.post("/x/gw/activity", content=batch)).status_code == 400
        assert (await client.post(f"/{USCC}/gw/ack", content=batch)).status_code == 404
        assert (await client.get(activity_path())).status_code == 405
        compressed = await client.post(
            activity_path(), content=batch, headers={"content-encoding": "br"}
        )
        assert compressed.status_code == 415
        monkeypatch.setattr(platform_https, "MAX_BODY", len(batch) - 1)
        too_big = await client.post(activity_path(), content=batch)
        assert too_big.status_code == 413
        monkeypatch.undo()
        # the connection was closed after each refusal; a new one still works
        assert (await client.post(activity_path(), content=batch)).status_code == 200


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_too_large_gets_413_not_a_reset(
    platform: Listening, monkeypatch: pytest.MonkeyPatch, framing: str
):
    """Refused before its body is read (by its content-length, or once it grew too large):
    the client still sending hears 413, as the platform lets it finish before closing."""
    monkeypatch.setattr(platform_https, "MAX_BODY", 1024)
    body = b"x" * (16 * 1024 * 1024)  # far more than the sockets' buffers hold

    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(body), 64 * 1024):
            yield body[at : at + 64 * 1024]

    content = body if framing == "content-length" else pieces()
    async with platform.client(platform.gateway) as client:
        refused = await client.post(activity_path(), content=content)
    assert refused.status_code == 413
    assert refused.json() == {"error": "a batch is at most 1024 bytes"}
    assert refused.headers["connection"] == "close"
    assert platform.server.desk.store.counts() == (0, 0)


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
async def test_a_client_without_a_valid_certificate_is_refused_in_the_handshake(
    platform: Listening, tmp_path: Path, who: str
):
    cert = {
        "no certificate": None,
        "another CA": CertificateAuthority(tmp_path / "o", "other CA").issue("gw", server=False),
        "expired": platform.pki.issue("old-gw", server=False, expired=True),
    }[who]
    batch = json.dumps(build_batch(USCC, "gw", records())).encode()
    async with platform.client(cert) as client:
        with pytest.raises((httpx.TransportError, ssl.SSLError)) as refused:
            await client.post(activity_path(), content=batch)
    # the client hears why, in the TLS alert the platform sent before closing
    alert = {
        "no certificate": "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "another CA": "TLSV1_ALERT_UNKNOWN_CA",
        "expired": "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    }[who]
    assert alert in repr(refused.value), repr(refused.value)
    assert platform.server.counters.tls_refused == 1
    assert platform.server.counters.requests == 0
    reason = platform.server.counters.last_tls_refusal or ""
    expected = {
        "no certificate": "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "another CA": "unable to get local issuer certificate",
        "expired": "certificate has expired",
    }[who]
    assert expected in reason, reason
    assert platform.server.desk.store.counts() == (0, 0)


def test_unreadable_tls_files_are_named(tmp_path: Path, pki: CertificateAuthority):
    cert = pki.issue("platform-https", server=True)
    with pytest.raises(HttpsSetupError, match=f"client CA {tmp_path / 'none.pem'}"):
        HttpsSettings(cert.cert, cert.key, tmp_path / "none.pem").tls_context()
    with pytest.raises(HttpsSetupError, match=f"server certificate {pki.cert_path}"):
        HttpsSettings(pki.cert_path, cert.key, pki.cert_path).tls_context()  # key of another


def test_https_options_of_the_simulator_are_checked_before_it_starts(
    tmp_path: Path, pki: CertificateAuthority
):
    from typer.testing import CliRunner

    from gateway.cli import app

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["sim", "platform", "--db", str(tmp_path / "p.db"), *args])
        return result.exit_code, " ".join(result.output.split())

    cert = pki.issue("platform-https", server=True)
    code, out = run("--no-mqtt")
    assert (code, out) == (2, "--no-mqtt needs --https-port: the simulator would receive nothing")
    code, out = run("--https-cert", str(cert.cert))
    assert (code, out) == (2, "--https-cert needs --https-port")
    code, out = run("--https-port", "0", "--https-cert", str(cert.cert))
    assert code == 2
    assert "--https-port needs --https-key FILE" in out
    assert "--https-port needs --https-client-ca FILE" in out
    missing = tmp_path / "ca.pem"
    code, out = run(
        "--https-port", "0", "--https-cert", str(cert.cert), "--https-key", str(cert.key),
        "--https-client-ca", str(missing),
    )  # fmt: skip
    assert (code, out) == (2, f"client CA {missing}: No such file or directory")
    assert not (tmp_path / "platform-ack.key").exists()  # nothing made for a simulator not run


def test_the_simulator_prints_the_lines_a_site_takes(tmp_path: Path, pki: CertificateAuthority):
    """`tanji sim platform` over HTTPS prints `[https] url = "..."` and `[https]
    platform_ack_key = "..."`; a gateway's link made of them gets its batch acked."""
    server, gateway = pki.issue("platform-https", server=True), pki.issue("gw", server=False)
    platform = Proc(
        [
            "sim", "platform", "--no-mqtt", "--db", str(tmp_path / "platform.db"),
            "--https-port", "0", "--https-cert", str(server.cert), "--https-key",
            str(server.key), "--https-client-ca", str(pki.cert_path),
        ],
        tmp_path / "platform.log",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: "[https] url = " in platform.output(), 30, "the [https] url line")
        out = platform.output()
        url = re.search(r'\[https\] url = "([^"]+)"', out)
        key = re.search(r'with \[https\] platform_ack_key = "([^"]+)"', out)
        assert url is not None, out
        assert key is not None, out
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", url[1]), url[1]
        ctx = ssl.create_default_context(cafile=str(pki.cert_path))
        ctx.load_cert_chain(str(gateway.cert), str(gateway.key))
        batch = build_batch(USCC, "gw", records())
        with httpx.Client(verify=ctx, timeout=10.0) as client:  # {url}/{topic_prefix}/...
            answer = client.post(f"{url[1]}/tanji/v1/{USCC}/gw/activity", json=batch)
        assert answer.status_code == 200, answer.text
        keys = AckKeys.from_pem(Path(key[1]).read_bytes())
        assert read_ack(answer.content, USCC, "gw", keys).status is AckStatus.ACCEPTED
    finally:
        platform.kill()
