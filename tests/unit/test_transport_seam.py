"""Delivery driven through the transport seam alone (cloud_sync/transport.py): a transport
that is not MQTT — a request/response link whose acks come back as the answers to its own
sends, as HTTPS does — gets the outbox delivered, acked and verified, with the same
resends, reconnects and readings stream. The platform behind it is in-process but real in
what matters: it parses batches with the contract and signs its acks with its key."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import pytest
from pydantic import PrivateAttr

from cloud_sync import (
    Ack,
    AckSigner,
    AckStatus,
    BatchRefused,
    CloudSync,
    DeliveryConfig,
    InboundMessage,
    LinkConfig,
    Outgoing,
    StatusMessage,
    Topics,
    TransportError,
    parse_batch,
    parse_readings_batch,
    reading_message,
)
from gateway.cli.status import _link as status_caption_link
from gateway.runtime.metrics import prometheus_text
from simulators.backlog import fill_outbox, meter, reading, site_records

USCC = "91320000MA1TANJ0D7"
GW = "gw-seam"
TOPICS = Topics("tanji/v1", USCC, GW)
START = 1_767_196_800_000_000_000  # 2026-01-01 00:00 Asia/Shanghai (aligned)


class Platform:
    """Stores batches once by id, answers `accepted` / `duplicate`, signs every ack. Its
    knobs: sends that fail (the link fails: TransportError), acks to lose, batches it
    refuses as sent (BatchRefused: an HTTPS 400 or 413), and how long an answer takes."""

    def __init__(
        self,
        signer: AckSigner,
        fail_sends: set[int],
        lose_acks: int,
        refuse: Callable[[Outgoing], bool] = lambda _: False,
        answer_s: float = 0.0,
    ) -> None:
        self.signer = signer
        self.fail_sends = fail_sends  # which sends (1-based, over all sessions) fail
        self.lose_acks = lose_acks
        self.refuse = refuse
        self.answer_s = answer_s
        self.refused = 0
        self.in_flight_at_exit: list[int] = []  # sends still running as each session ended
        self.sends = 0
        self.stored: dict[str, int] = {}  # batch id -> records or readings in it
        self.statuses: list[tuple[str, str | None]] = []
        self.sessions = 0

    def answer(self, message: Outgoing) -> bytes | None:
        self.sends += 1
        if self.sends in self.fail_sends:
            raise TransportError(f"platform.test: connection reset at send {self.sends}")
        if self.refuse(message):
            self.refused += 1
            raise BatchRefused(f"platform.test answered 413 to {message.kind} batch: too large")
        payload = gzip.decompress(message.payload) if message.compressed else message.payload
        if message.kind == "activity":
            size = len(parse_batch(payload)["records"])
        else:
            size = len(parse_readings_batch(payload)["readings"])
        status = AckStatus.DUPLICATE if message.batch_id in self.stored else AckStatus.ACCEPTED
        self.stored[message.batch_id] = size
        if self.lose_acks:
            self.lose_acks -= 1
            return None
        return self.signer.sign(Ack(message.batch_id, status), USCC, GW, self.sends)


class LoopbackTransport:
    """A request/response transport: each send's answer is queued as a received message."""

    def __init__(self, platform: Platform, status: StatusMessage) -> None:
        self.platform = platform
        self.status = status
        self.answers: asyncio.Queue[InboundMessage] | None = None
        self.in_flight = 0

    async def __aenter__(self) -> Self:
        self.platform.sessions += 1
        self.answers = asyncio.Queue()
        self.platform.statuses.append(("online", None))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.platform.in_flight_at_exit.append(self.in_flight)
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.platform.statuses.append(("offline", "stopped"))
        self.answers = None

    async def send(self, message: Outgoing) -> None:
        assert self.answers is not None, "send outside a session"
        self.in_flight += 1
        try:
            await asyncio.sleep(0)  # a round trip
            body = self.platform.answer(message)
            await asyncio.sleep(self.platform.answer_s)  # the answer on its way back
        finally:
            self.in_flight -= 1
        assert self.answers is not None, "a send that outlived its session"
        if body is not None:
            self.answers.put_nowait(InboundMessage(None, body))

    async def received(self) -> AsyncIterator[list[InboundMessage]]:
        assert self.answers is not None
        while True:
            step = [await self.answers.get()]
            while not self.answers.empty():
                step.append(self.answers.get_nowait())
            yield step


class LoopbackLink(LinkConfig):
    """The section of a transport that is not MQTT (as `[https]` is)."""

    section: ClassVar[str] = "loopback"
    ack_channel: ClassVar[str] = "in an answer"
    _platform: Platform = PrivateAttr()

    @property
    def peer(self) -> str:
        return "platform platform.test"

    @property
    def peer_is_local(self) -> bool:
        return False

    def checks(self) -> tuple[Any, ...]:
        return ()

    def transport(self, topics: Topics, client_id: str, status: StatusMessage) -> Any:
        return LoopbackTransport(self._platform, status)


class ListReadings:
    """A readings source (cloud_sync.ReadingsSource) over a list, cursor in memory."""

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


def link_to(tmp_path: Path, platform_keys: AckSigner) -> LoopbackLink:
    key = tmp_path / "platform-ack.pub.pem"
    key.write_bytes(platform_keys.public_pem())
    return LoopbackLink(platform_ack_key=key)


async def test_delivery_through_a_transport_that_is_not_mqtt(tmp_path: Path):
    db = tmp_path / "gw.db"
    records = list(site_records(USCC, GW, meters=3, start_ns=START, periods=4))
    ids = fill_outbox(db, USCC, GW, records, batch_size=2)
    signer = AckSigner.generate()
    platform = Platform(signer, fail_sends={3}, lose_acks=2)
    link = link_to(tmp_path, signer)
    link._platform = platform
    readings = ListReadings(12)
    policy = DeliveryConfig(
        ack_timeout_s=0.5, max_in_flight=4, backlog_rate=0, readings=True, readings_batch_size=5
    )
    sync = CloudSync(db, TOPICS, link, "gw", readings=readings, delivery=policy)
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(30):
            while (await sync.stats()).pending or readings.cursor < 12:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await sync.stats()).acked == len(ids)
    activity = {b: n for b, n in platform.stored.items() if b in ids}
    assert sorted(activity) == sorted(ids)  # every batch, each stored once by its id
    assert sum(activity.values()) == len(records)
    c = sync.counters
    assert c.acks_authenticated
    assert not c.bad_acks
    # the failed send ended the session; the next one sent every unacked batch again
    assert (c.connects, c.disconnects, platform.sessions) == (2, 1, 2)
    assert c.last_error == "platform.test: connection reset at send 3"
    assert c.duplicates >= 1  # a lost ack: sent again after ack_timeout_s, a duplicate
    assert c.readings_sent == 12
    assert readings.cursor == 12
    assert len(platform.stored) == len(ids) + 3
    assert platform.statuses[-1] == ("offline", "stopped")


async def test_an_answer_from_another_key_settles_nothing(tmp_path: Path):
    db = tmp_path / "gw.db"
    ids = fill_outbox(db, USCC, GW, list(site_records(USCC, GW, 1, START, 2)), batch_size=1)
    platform = Platform(AckSigner.generate(), fail_sends=set(), lose_acks=0)  # not the key
    link = link_to(tmp_path, AckSigner.generate())
    link._platform = platform
    sync = CloudSync(db, TOPICS, link, "gw", delivery=DeliveryConfig(ack_timeout_s=0.2))
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(30):
            while sync.counters.acks_dropped.get("unauthenticated", 0) < 2 * len(ids):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (await sync.stats()).pending == len(ids)  # still pending, sent again and again
    assert sync.counters.acks == 0


async def run_until(sync: CloudSync, done: Callable[[], bool], seconds: float = 30) -> None:
    """Delivery until `done()` (checked every 50 ms), then stopped as the gateway stops."""
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(seconds):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_readings_batch_counts_as_rejected_and_the_stream_goes_on(
    tmp_path: Path,
):
    """A readings batch the next hop refuses (HTTPS 413) would be refused again as sent: it
    counts as rejected, the cursor moves past it, and the link stays up."""
    db = tmp_path / "gw.db"
    ids = fill_outbox(db, USCC, GW, list(site_records(USCC, GW, 1, START, 2)), batch_size=1)
    signer = AckSigner.generate()
    platform = Platform(signer, set(), 0, refuse=lambda m: m.kind == "readings")
    link = link_to(tmp_path, signer)
    link._platform = platform
    readings = ListReadings(12)
    policy = DeliveryConfig(ack_timeout_s=0.2, backlog_rate=0, readings=True, readings_batch_size=5)
    sync = CloudSync(db, TOPICS, link, "gw", readings=readings, delivery=policy)
    await run_until(sync, lambda: readings.cursor == 12 and sync.counters.acks == len(ids))
    c = sync.counters
    assert (c.readings_rejected, c.readings_sent) == (3, 0)  # 5 + 5 + 2, each refused once
    assert platform.refused == 3
    assert "answered 413 to readings batch: too large" in (c.last_readings_rejection or "")
    assert (c.connects, c.disconnects, c.batches_refused) == (1, 0, 0)
    assert (await sync.stats()).acked == len(ids)  # the activity batches went beside it


async def test_a_refused_activity_batch_waits_in_the_outbox_counted_and_logged_within_a_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """An activity batch the next hop refuses stays in the outbox and is sent again after
    ack_timeout_s, every time counted for `tanji status`; the link stays up, the other
    batches are delivered, and the log gets a few lines, not one per resend."""
    db = tmp_path / "gw.db"
    ids = fill_outbox(db, USCC, GW, list(site_records(USCC, GW, 1, START, 3)), batch_size=1)
    signer = AckSigner.generate()
    platform = Platform(signer, set(), 0, refuse=lambda m: m.batch_id == ids[1])
    link = link_to(tmp_path, signer)
    link._platform = platform
    sync = CloudSync(db, TOPICS, link, "gw", delivery=DeliveryConfig(ack_timeout_s=0.05))
    with caplog.at_level("ERROR", logger="cloud_sync"):
        await run_until(sync, lambda: sync.counters.batches_refused >= 12)
    stats = await sync.stats()
    assert (stats.acked, stats.pending) == (len(ids) - 1, 1)
    c = sync.counters
    assert (c.connects, c.disconnects, c.last_error) == (1, 0, None)
    assert c.last_refusal == "platform.test answered 413 to activity batch: too large"
    assert ids[1] not in platform.stored
    logged = [r.message for r in caplog.records if "answered 413" in r.message]
    assert 1 <= len(logged) <= 5 < c.batches_refused, logged
    assert "it stays in the outbox and is sent again after 0.05 s" in logged[0]
    # what `tanji status` shows of it (the status file holds the counters' snapshot)
    assert f" · {c.batches_refused} batch sends REFUSED by the platform (last: platform.test" in (
        status_caption_link(c.snapshot())
    )
    metrics = prometheus_text({"link": c.snapshot()}, 0.0)
    assert f"tanji_batch_sends_refused_total {float(c.batches_refused)}" in metrics


async def test_a_failed_send_ends_its_round_before_the_session_ends(tmp_path: Path):
    """When one send of a round fails (the link), the others of the round are ended with the
    session, not left running on a transport already closed."""
    db = tmp_path / "gw.db"
    ids = fill_outbox(db, USCC, GW, list(site_records(USCC, GW, 2, START, 3)), batch_size=1)
    signer = AckSigner.generate()
    platform = Platform(signer, fail_sends={1}, lose_acks=0, answer_s=0.3)
    link = link_to(tmp_path, signer)
    link._platform = platform
    policy = DeliveryConfig(max_in_flight=len(ids), backlog_rate=0)
    sync = CloudSync(db, TOPICS, link, "gw", delivery=policy)
    await run_until(sync, lambda: sync.counters.acks == len(ids))
    assert sync.counters.disconnects == 1
    assert platform.in_flight_at_exit == [0, 0]  # each session ended with no send running


def test_delivery_policy_is_given_to_delivery_never_carried_by_the_link():
    """The link's section says how to reach the platform; the policy is always the
    DeliveryConfig delivery is given. Policy keys in a link's config are refused, not
    silently ignored (older site files' [mqtt] keys are the site's to move: test_delivery_config)."""
    from pydantic import ValidationError

    from cloud_sync import HttpsConfig, MqttConfig

    for link, extra in (
        (MqttConfig, {}),
        (HttpsConfig, {"url": "https://127.0.0.1:8443"}),
    ):
        with pytest.raises(ValidationError, match="batch_size"):
            link(batch_size=7, **extra)
    with pytest.raises(TypeError, match="delivery"):
        CloudSync(Path("unused.db"), TOPICS, LoopbackLink(), "gw")  # type: ignore[call-arg]


def test_each_link_describes_its_own_failures_through_the_link_config():
    """Whoever holds a LinkConfig (delivery, the platform simulator) asks it to put a failure
    in words: TLS failures found behind the client library's wrapper name the peer and the
    CA file, whichever transport it is; the module-level MQTT-only helper is gone."""
    import ssl

    import cloud_sync
    from cloud_sync import HttpsConfig, MqttConfig

    assert not hasattr(cloud_sync, "describe_error")
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "certificate has expired"
    wrapped = ConnectionError("connect failed")
    wrapped.__cause__ = verify
    links: list[LinkConfig] = [
        MqttConfig(broker_url="mqtts://broker.example.cn:8883"),
        HttpsConfig(url="https://platform.example.cn", ca_file=Path("/etc/tanji/ca.pem")),
    ]
    assert [link.describe_error(wrapped) for link in links] == [
        "TLS: the certificate of the broker broker.example.cn:8883 failed verification"
        " against the system CAs: certificate has expired",
        "TLS: the certificate of the platform https://platform.example.cn failed"
        " verification against /etc/tanji/ca.pem: certificate has expired",
    ]
    reset = ConnectionResetError("connection reset by peer")
    assert links[1].describe_error(reset) == (
        "platform https://platform.example.cn: ConnectionResetError: connection reset by peer"
    )


def test_the_public_face_leaves_out_what_only_cloud_sync_uses():
    """cloud_sync/__init__.py is the face the gateway, the simulators, the bench and the
    tests use. A transport's session class is reached through its LinkConfig (`transport`),
    the counters through `CloudSync.counters`, parked batches through the Outbox, and
    `is_loopback` through `peer_is_local`: none of them is part of the face (nothing
    outside cloud_sync used them; an import of one would now fail, and mypy says where)."""
    import cloud_sync

    internal = ("HttpsTransport", "MqttTransport", "Parked", "SyncCounters", "is_loopback")
    assert not set(internal) & set(cloud_sync.__all__)
    assert not any(hasattr(cloud_sync, name) for name in internal)
