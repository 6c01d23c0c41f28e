"""The gateway's HTTPS transport against the platform simulator's HTTPS listener on a real TLS
socket: delivery (the same outbox, window and ack verification as over MQTT) settles every
batch by the platform's signed acks; a gateway whose client certificate the platform refuses
says so, loses nothing, and delivers everything once its certificate is fixed; a platform
that cannot store answers 503 and the batches wait; a batch the platform refuses as sent
(413) is counted and waits (activity) or counts as rejected (readings) while the link stays up
and the rest is delivered; an idle link is kept alive, and one whose platform died between
batches is noticed; a request answered too slowly fails in timeout_s as a whole; configuration
errors name the field and the file."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from cloud_sync import AckSigner, CloudSync, DeliveryConfig, HttpsConfig, Topics, reading_message
from gateway.periods import datetime_to_ns
from simulators import platform_https
from simulators.backlog import fill_outbox, meter, reading, site_records
from simulators.pki import CertificateAuthority, Issued
from simulators.platform import PlatformDesk, PlatformStore, ack_signer, public_key_path
from simulators.platform_https import HttpsSettings, PlatformHttps
from tests.support.procs import Proc, wait_until

USCC = "91320000MA1TANJ0D7"
GW = "gw-https"
START = datetime_to_ns(datetime(2026, 11, 24, tzinfo=ZoneInfo("Asia/Shanghai")))
TOPICS = Topics("tanji/v1", USCC, GW)


@dataclass
class Platform:
    server: PlatformHttps
    pki: CertificateAuthority
    ack_key: Path  # the public key gateways verify acks with

    def link(self, cert: Issued | None, **extra: Any) -> HttpsConfig:
        files = {} if cert is None else {"cert_file": cert.cert, "key_file": cert.key}
        return HttpsConfig(
            url=f"https://127.0.0.1:{self.server.port}",
            ca_file=self.pki.cert_path,
            platform_ack_key=self.ack_key,
            **files,
            **extra,
        )


@pytest.fixture
async def platform(tmp_path: Path, pki: CertificateAuthority) -> AsyncIterator[Platform]:
    server_cert = pki.issue("platform-https", server=True)
    key = tmp_path / "platform-ack.key"
    desk = PlatformDesk(PlatformStore(tmp_path / "platform.db"), ack_signer(key))
    server = PlatformHttps(
        desk, HttpsSettings(server_cert.cert, server_cert.key, pki.cert_path, port=0)
    )
    listening = await server.listen()
    task = asyncio.create_task(listening.serve_forever())
    try:
        yield Platform(server, pki, public_key_path(key))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        listening.close()


def backlog(db: Path, periods: int = 6) -> tuple[list[str], int]:
    records = list(site_records(USCC, GW, meters=4, start_ns=START, periods=periods))
    return fill_outbox(db, USCC, GW, records, batch_size=3), len(records)


def delivery(
    db: Path, link: HttpsConfig, policy: DeliveryConfig | None = None, readings: Any = None
) -> CloudSync:
    """The gateway's delivery over `link`, the backlog unthrottled unless `policy` says."""
    policy = policy or DeliveryConfig(backlog_rate=0)
    return CloudSync(db, TOPICS, link, f"tanji-{GW}", readings=readings, delivery=policy)


class ListReadings:
    """A readings source (cloud_sync.ReadingsSource) over a list, its cursor in memory."""

    def __init__(self, n: int) -> None:
        m = meter(0)
        self.messages = [
            reading_message(i, reading(m, START + i * 10**9, Decimal(i))) for i in range(1, n + 1)
        ]
        self.cursor = 0

    async def next(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        batch = self.messages[self.cursor : self.cursor + limit]
        return self.cursor + len(batch), batch

    async def advance(self, seq: int) -> None:
        self.cursor = seq


async def deliver(sync: CloudSync, until_settled: bool, seconds: float = 30) -> None:
    """Run delivery until the outbox is empty (or for `seconds`), then stop it as the gateway
    stops."""
    task = asyncio.create_task(sync.run())
    try:
        if until_settled:
            async with asyncio.timeout(seconds):
                while (await sync.stats()).pending:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        else:
            await asyncio.sleep(seconds)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_every_batch_goes_over_https_and_is_settled_by_the_signed_ack(
    tmp_path: Path, platform: Platform
):
    db = tmp_path / "gw.db"
    ids, records = backlog(db)
    cert = platform.pki.issue("gw", server=False)
    sync = delivery(db, platform.link(cert))
    await deliver(sync, until_settled=True)
    stats = await sync.stats()
    assert (stats.acked, stats.pending) == (len(ids), 0)
    assert platform.server.desk.store.counts() == (len(ids), records)
    c = sync.counters
    assert (c.connects, c.disconnects, c.bad_acks) == (1, 0, 0), c.last_error
    assert c.acks_authenticated  # each ack checked against the platform's key
    # the session announced itself, and its end when the gateway stopped
    status = platform.server.statuses[USCC, GW]
    assert (status["state"], status.get("reason")) == ("offline", "stopped")


async def test_a_refused_client_certificate_is_reported_and_nothing_is_lost(
    tmp_path: Path, platform: Platform
):
    db = tmp_path / "gw.db"
    ids, records = backlog(db, periods=3)
    foreign = CertificateAuthority(tmp_path / "other", "other CA").issue("gw", server=False)
    for cert in (foreign, None):
        sync = delivery(db, platform.link(cert))
        await deliver(sync, until_settled=False, seconds=2.0)
        c = sync.counters
        assert c.connects == 0
        error = c.last_error or ""
        if cert is None:
            assert "refused this gateway: no client certificate is configured" in error, error
            assert "CERTIFICATE_REQUIRED" in error
        else:
            assert f"refused this gateway's client certificate {foreign.cert}" in error, error
            assert "UNKNOWN_CA" in error
        assert (await sync.stats()).pending == len(ids)  # all still in the outbox
    assert platform.server.counters.tls_refused >= 2
    assert platform.server.desk.store.counts() == (0, 0)
    # the certificate fixed: everything goes
    sync = delivery(db, platform.link(platform.pki.issue("gw", server=False)))
    await deliver(sync, until_settled=True)
    assert (await sync.stats()).acked == len(ids)
    assert platform.server.desk.store.counts() == (len(ids), records)


async def test_a_platform_that_cannot_store_answers_503_and_the_batches_wait(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
):
    db = tmp_path / "gw.db"
    ids, _ = backlog(db, periods=2)
    store = platform.server.desk.store

    def broken(*_: object) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(store, "receive_many", broken)
    monkeypatch.setattr(store, "reopen", lambda: None)
    sync = delivery(db, platform.link(platform.pki.issue("gw", server=False)))
    await deliver(sync, until_settled=False, seconds=2.0)
    assert "answered 503" in (sync.counters.last_error or "")
    assert "disk I/O error" in (sync.counters.last_error or "")
    assert (await sync.stats()).pending == len(ids)
    monkeypatch.undo()
    await deliver(sync, until_settled=True)
    assert (await sync.stats()).acked == len(ids)


async def test_an_activity_batch_too_large_for_the_platform_waits_counted_link_up(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
):
    """413 for one batch: that batch stays in the outbox, sent again after ack_timeout_s
    and counted each time; the link stays up and the other batches are delivered."""
    monkeypatch.setattr(platform_https, "MAX_BODY", 2000)  # the platform takes 2000 bytes
    db = tmp_path / "gw.db"
    records = list(site_records(USCC, GW, meters=4, start_ns=START, periods=2))
    small = fill_outbox(db, USCC, GW, records[:4], batch_size=1)  # ~700 bytes each
    (large,) = fill_outbox(db, USCC, GW, records[4:], batch_size=4, compress=False)  # ~5 kB
    cert = platform.pki.issue("gw", server=False)
    sync = delivery(db, platform.link(cert), DeliveryConfig(ack_timeout_s=0.2, backlog_rate=0))
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(30):
            while sync.counters.batches_refused < 3 or sync.counters.acks < len(small):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stats = await sync.stats()
    assert (stats.acked, stats.pending) == (len(small), 1)
    c = sync.counters
    assert (c.connects, c.disconnects, c.last_error) == (1, 0, None)
    assert f"answered 413 to activity batch {large}" in (c.last_refusal or "")
    assert "a batch is at most 2000 bytes" in (c.last_refusal or "")
    assert platform.server.desk.store.counts() == (len(small), len(small))


async def test_a_readings_batch_too_large_for_the_platform_counts_as_rejected(
    tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch
):
    """413 for a raw readings batch: it counts as rejected and the stream goes on past it
    (the readings stay in the gateway's store), the link up, the activity delivered."""
    monkeypatch.setattr(platform_https, "MAX_BODY", 2000)
    db = tmp_path / "gw.db"
    records = list(site_records(USCC, GW, meters=2, start_ns=START, periods=1))
    ids = fill_outbox(db, USCC, GW, records, batch_size=1)
    readings = ListReadings(30)
    policy = DeliveryConfig(
        backlog_rate=0, readings=True, readings_batch_size=10, compression="none"
    )
    sync = delivery(db, platform.link(platform.pki.issue("gw", server=False)), policy, readings)
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(30):
            while readings.cursor < 30 or sync.counters.acks < len(ids):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    c = sync.counters
    assert (c.readings_rejected, c.readings_sent) == (3, 0)
    assert "answered 413 to readings batch" in (c.last_readings_rejection or "")
    assert (c.connects, c.disconnects, c.batches_refused) == (1, 0, 0)
    assert (await sync.stats()).acked == len(ids)


async def until(condition: Any, seconds: float, what: str) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {seconds} s: {what}") from None


async def test_an_idle_link_is_kept_alive_and_a_dead_platform_is_noticed(
    tmp_path: Path, pki: CertificateAuthority
):
    """Nothing to send: the session stays up on its keepalives (the `online` status posted
    again every keepalive_s); the platform's process killed between batches, the link is
    known down within keepalive_s + timeout_s, with the reason, and comes back with it."""
    server = pki.issue("platform-https", server=True)

    def simulator(port: str) -> Proc:
        return Proc(
            [
                "sim", "platform", "--no-mqtt", "--db", str(tmp_path / "platform.db"),
                "--https-port", port, "--https-cert", str(server.cert), "--https-key",
                str(server.key), "--https-client-ca", str(pki.cert_path),
            ],
            tmp_path / "platform.log",
        ).start()  # fmt: skip

    platform = simulator("0")
    sync: CloudSync | None = None
    task: asyncio.Task[None] | None = None
    try:
        wait_until(lambda: "platform_ack_key = " in platform.output(), 30, "the simulator's lines")
        url = re.search(r'\[https\] url = "([^"]+)"', platform.output())
        key = re.search(r'platform_ack_key = "([^"]+)"', platform.output())
        assert url is not None, platform.output()
        assert key is not None, platform.output()
        cert = pki.issue("gw", server=False)
        link = HttpsConfig(
            url=url[1],
            ca_file=pki.cert_path,
            cert_file=cert.cert,
            key_file=cert.key,
            platform_ack_key=Path(key[1]),
            keepalive_s=1,
            timeout_s=2.0,
        )
        sync = delivery(tmp_path / "gw.db", link)
        task = asyncio.create_task(sync.run())
        c = sync.counters
        await until(lambda: c.connected, 30, "connected")
        await asyncio.sleep(3.5)  # idle: three keepalives, each answered
        assert (c.connected, c.connects, c.disconnects) == (True, 1, 0), c.last_error
        platform.kill()  # no goodbye: the kept-alive connections die with the process
        await until(lambda: not c.connected, 1 + 2 + 5, "the dead link noticed")
        assert c.disconnects == 1
        assert "the keepalive, after 1 s without traffic" in (c.last_error or ""), c.last_error
        platform = simulator(url[1].rsplit(":", 1)[1])  # the same port again
        await until(lambda: c.connects == 2 and c.connected, 60, "connected again")
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        platform.kill()


async def test_an_answer_trickling_in_fails_the_request_within_timeout_s(
    tmp_path: Path, pki: CertificateAuthority
):
    """A server that answers a byte every 0.2 s never trips httpx's per-step timeouts; the
    request as a whole is given timeout_s, then the session fails saying why."""
    server_cert = pki.issue("trickle", server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(server_cert.cert), str(server_cert.key))
    requests = 0

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        with contextlib.suppress(OSError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            requests += 1
            writer.write(b"HTTP/1.1 204 No Content\r\n")  # and the rest of the head, slowly
            for _ in range(600):
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(b"x-slow: y\r\n")
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    link = HttpsConfig(url=f"https://127.0.0.1:{port}", ca_file=pki.cert_path, timeout_s=1.0)
    sync = delivery(tmp_path / "gw.db", link)
    task = asyncio.create_task(sync.run())
    try:
        await until(lambda: sync.counters.last_error is not None, 10, "the session failed")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
    assert requests >= 1  # it was answering
    assert sync.counters.last_error == (
        f"platform https://127.0.0.1:{port}: no complete answer within 1 s ([https] timeout_s):"
        " the platform or the network is too slow or stalled; the request is made again in"
        " the next session"
    )
    assert sync.counters.connects == 0


async def test_log_lines_name_the_https_section_and_where_acks_arrive(
    tmp_path: Path, platform: Platform, caplog: pytest.LogCaptureFixture
):
    """The warnings say `[https]` and "in the platform's answer", not MQTT's words: acks
    unauthenticated for want of `[https] platform_ack_key`; an answer signed by another key
    dropped."""
    db = tmp_path / "gw.db"
    backlog(db, periods=1)
    cert = platform.pki.issue("gw", server=False)
    link = platform.link(cert)
    with caplog.at_level("WARNING", logger="cloud_sync"):
        other = tmp_path / "other.pub.pem"
        other.write_bytes(AckSigner.generate().public_pem())
        forged = delivery(db, link.model_copy(update={"platform_ack_key": other}))
        await deliver(forged, until_settled=False, seconds=1.0)
        unsigned = delivery(db, link.model_copy(update={"platform_ack_key": None}))
        await deliver(unsigned, until_settled=True)
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "acks are NOT authenticated ([https] platform_ack_key is not set)" in m for m in lines
    )
    assert forged.counters.acks_dropped.get("unauthenticated"), forged.counters
    assert any(
        m.startswith("dropped a message in the platform's answer (unauthenticated)") for m in lines
    ), lines


def test_configuration_errors_name_the_field_and_the_file(tmp_path: Path):
    with pytest.raises(ValidationError, match="scheme must be https://"):
        HttpsConfig(url="http://127.0.0.1:8443")
    with pytest.raises(ValidationError, match="both cert_file and key_file"):
        HttpsConfig(url="https://127.0.0.1", cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="no credentials in the URL"):
        HttpsConfig(url="https://user:pw@127.0.0.1")
    missing = tmp_path / "gw.key"
    (tmp_path / "gw.pem").write_text("not a certificate")
    config = HttpsConfig(
        url="https://127.0.0.1:8443",
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "gw.pem",
        key_file=missing,
        platform_ack_key=tmp_path / "platform.pub.pem",
    )
    assert config.problems() == [
        f"ca_file {tmp_path / 'ca.pem'}: No such file or directory",
        f"platform_ack_key {tmp_path / 'platform.pub.pem'}: No such file or directory",
    ]
    pki = CertificateAuthority(tmp_path / "pki")
    config = config.model_copy(update={"ca_file": pki.cert_path})
    assert config.problems()[0] == f"key_file {missing}: No such file or directory"
    missing.write_text("not a key")
    assert config.problems()[0].startswith(
        f"cert_file {tmp_path / 'gw.pem'} / key_file {missing}: "
    )
