"""Drains the outbox to the platform over MQTT and settles batches by the platform's acks.

Delivery: QoS 1 publish (the broker has it), then an application ack from the platform
(the platform has stored it). A batch stays pending until that ack; after a reconnect or
`ack_timeout_s` without an ack it is published again, and the platform recognises the
content-derived batch id as a duplicate. At most `max_in_flight` batches wait for acks at a
time; batches made within the last `ack_timeout_s` are live and go first, older ones (the
backlog of an outage) drain oldest first at `backlog_rate` batches per second beside them.

The link announces itself: a retained `online` message on `.../status` when connected,
`offline` when stopped, and the broker publishes the retained last will (`offline`, lost)
when the link dies unannounced.

Nothing on the ack topic can stop the ack reader: a message that is retained, too large,
malformed, unsigned or forged (with `platform_ack_key`), for another gateway or for no batch
of ours is counted (`acks_dropped`), logged once with a bounded excerpt and dropped; the
other acks of the same pass are applied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiomqtt

from cloud_sync.acks import AckKeys, AckRefused, excerpt, one_line, read_ack
from cloud_sync.contract import (
    CONTRACT_VERSION,
    Ack,
    AckStatus,
    Topics,
    build_readings_batch,
    validate,
)
from cloud_sync.outbox import Outbox, OutboxStats
from cloud_sync.transport import MqttConfig, TransportError, describe_error

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_SCHEMA_ID = "tanji.status/1"
MAX_ACKS_PER_COMMIT = 500


@dataclass
class SyncCounters:
    """What the sync loop has done since start (for status output)."""

    connected: bool = False
    connects: int = 0
    published: int = 0
    published_backlog: int = 0
    acks: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_acks: int = 0  # messages on the ack topic dropped, for any reason (below)
    acks_dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    acks_authenticated: bool = False  # acks are verified with the platform's key
    last_error: str | None = None
    disconnects: int = 0
    readings_sent: int = 0  # the optional raw readings stream
    readings_rejected: int = 0
    last_readings_rejection: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class InboundMessage:
    """A message as it came off the ack topic, before anything is believed of it."""

    topic: str
    payload: bytes
    retain: bool = False

    @classmethod
    def of(cls, message: aiomqtt.Message) -> InboundMessage:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        return cls(message.topic.value, bytes(payload), bool(message.retain))


class LogBudget:
    """At most `burst` log lines per `window_s`; lines held back are counted and the next line
    says how many (a flood of bad messages cannot fill the disk with logs)."""

    def __init__(
        self, burst: int = 20, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._start = clock()
        self._used = 0
        self.held_back = 0

    def take(self) -> int | None:
        """None: do not log now; else the number of lines held back since the last one."""
        now = self._clock()
        if now - self._start >= self.window_s:
            self._start, self._used = now, 0
        if self._used >= self.burst:
            self.held_back += 1
            return None
        self._used += 1
        held, self.held_back = self.held_back, 0
        return held


class TokenBucket:
    """`rate` tokens per second, at most one second's worth saved up; rate 0: unlimited."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = max(1.0, rate)
        self._at = clock()

    def available(self, cap: int) -> int:
        if self.rate == 0:
            return cap
        now = self._clock()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now
        return min(cap, int(self._tokens))

    def take(self, n: int) -> None:
        if self.rate:
            self._tokens -= n


class ReadingsSource(Protocol):
    """Where the optional raw readings stream reads from: the gateway's store, in store order,
    from a cursor that moves only when the platform has acked a batch."""

    async def next(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(seq of the last one, up to `limit` readings in contract form) after the cursor."""
        ...

    async def advance(self, seq: int) -> None:
        """The platform has the readings up to `seq`."""
        ...


class LastError(logging.Handler):
    """Keeps paho's last error message: a TLS alert after the handshake (a refused client
    certificate) reaches us only as a missing CONNACK, and this says why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


class CloudSync:
    """One MQTT session to the platform for one gateway; `run()` until cancelled."""

    def __init__(
        self,
        db_path: Path,
        topics: Topics,
        config: MqttConfig,
        client_id: str,
        clock: Callable[[], int] = time.time_ns,
        readings: ReadingsSource | None = None,
    ) -> None:
        self.topics = topics
        self.readings = readings if config.readings else None
        self.config = config
        self.client_id = client_id
        self.counters = SyncCounters()
        self._clock = clock
        self._conn = sqlite3.connect(
            db_path, isolation_level=None, check_same_thread=False, timeout=30
        )
        # NORMAL, not FULL: what this connection writes (sends, acks) may be lost in a power
        # cut without harm: an ack forgotten means the batch is sent again and the platform
        # answers `duplicate`. Batches themselves are enqueued durably by the gateway's store
        # connection (FULL). Saves an fsync per round of sends and acks.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._outbox = Outbox(self._conn)
        self._db_lock = asyncio.Lock()
        self._work = asyncio.Event()
        self._backlog = TokenBucket(config.backlog_rate)
        self._mqtt_log = logging.getLogger(f"{__name__}.paho.{client_id}")
        self._mqtt_errors = LastError()
        self._mqtt_log.addHandler(self._mqtt_errors)
        self._awaited: dict[str, asyncio.Future[Ack]] = {}  # readings batches awaiting acks
        self._readings_sent: collections.deque[str] = collections.deque(maxlen=1000)
        self._drop_log = LogBudget()
        self._keys: AckKeys | None = None

    def wake(self) -> None:
        """New batches were enqueued: publish now rather than at the next poll."""
        self._work.set()

    async def _db(self, fn: Callable[[], T]) -> T:
        async with self._db_lock:
            return await asyncio.to_thread(fn)

    async def stats(self) -> OutboxStats:
        return await self._db(self._outbox.stats)

    def ack_keys(self) -> AckKeys | None:
        """The platform's ack-verification keys, read once (TransportError when the file
        cannot be read); None when none are configured: acks are then believed unsigned."""
        if self._keys is None and self.config.platform_ack_key is not None:
            self._keys = self.config.ack_keys()
            self.counters.acks_authenticated = True
        return self._keys

    async def run(self) -> None:
        backoff = 0.5
        will = aiomqtt.Will(self.topics.status, self._status("offline", "lost"), 1, True)
        if self.config.platform_ack_key is None:
            log.warning(
                "acks are NOT authenticated ([mqtt] platform_ack_key is not set): anyone who"
                " can publish on %s can settle this gateway's batches; allowed for a broker on"
                " this machine only (docs/platform-contract.md, Ack signatures)",
                self.topics.ack,
            )
        while True:
            self._mqtt_errors.message = None
            connected = False
            try:
                self.ack_keys()  # an unreadable key: the link stays down and says why
                kwargs = self.config.client_kwargs(self.client_id, will)
                async with aiomqtt.Client(**kwargs, logger=self._mqtt_log) as client:
                    connected = True
                    backoff = 0.5
                    await self._session(client)
            except* aiomqtt.MqttError as group:
                text = describe_error(group.exceptions[0], self.config)
                if not connected and self._mqtt_errors.message:
                    text = f"{text} while connecting: {self._mqtt_errors.message}"
                self._note_error(text)
            except* TransportError as group:
                self._note_error(str(group.exceptions[0]))
            except* sqlite3.Error as group:  # e.g. the store locked for too long: retried
                self._note_error(f"outbox database: {group.exceptions[0]}")
            except* Exception as group:  # a fault here must not stop the gateway collecting
                log.error("platform link failed", exc_info=group.exceptions[0])
                self._note_error(f"internal error: {group.exceptions[0]!r}")
            self.counters.connected = False
            delay = backoff * random.uniform(0.8, 1.2)
            log.warning("platform link down (%s); retry in %.1f s", self.counters.last_error, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, 30.0)

    async def _session(self, client: aiomqtt.Client) -> None:
        self.counters.connected = True
        self.counters.connects += 1
        log.info("connected to broker %s:%d", self.config.host, self.config.port)
        await client.subscribe(self.topics.ack, qos=1)
        await client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        await self._db(self._outbox.forget_sends)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive_acks(client))
                tg.create_task(self._publish_due(client))
                if self.readings is not None:
                    tg.create_task(self._stream_readings(client, self.readings))
        except asyncio.CancelledError:
            # stopping: say so (a clean disconnect does not fire the last will)
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(
                    client.publish(
                        self.topics.status, self._status("offline", "stopped"), 1, retain=True
                    ),
                    timeout=2.0,
                )
            raise

    def _note_error(self, text: str) -> None:
        self.counters.last_error = text
        self.counters.disconnects += 1

    def _status(self, state: str, reason: str | None = None) -> bytes:
        from gateway import __version__

        message: dict[str, Any] = {
            "schema": STATUS_SCHEMA_ID,
            "state": state,
            "uscc": self.topics.uscc,
            "gateway_id": self.topics.gateway_id,
            "software": f"tanji {__version__}",
            "contract": CONTRACT_VERSION,
        }
        if state == "online":
            message["since_ns"] = str(self._clock())
        if reason is not None:
            message["reason"] = reason
        validate("status.v1.json", message)
        return json.dumps(message).encode()

    async def _publish_due(self, client: aiomqtt.Client) -> None:
        cfg = self.config
        resend_ns = int(cfg.ack_timeout_s * 1e9)
        # wake for acks and new batches at once (the event), else poll: for the backlog's next
        # token, never faster than every 50 ms
        idle_s = 1.0 if cfg.backlog_rate == 0 else max(0.05, min(1.0, 1.0 / cfg.backlog_rate))
        while True:
            self._work.clear()
            now = self._clock()
            allowance = self._backlog.available(cfg.max_in_flight)
            due = await self._db(
                partial(
                    self._outbox.due, now, resend_ns, now - resend_ns, cfg.max_in_flight, allowance
                )
            )
            if not due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), timeout=idle_s)
                continue
            backlog = sum(b.backlog for b in due)
            self._backlog.take(backlog)
            # QoS 1: each returns at the broker's PUBACK; the batch stays pending until the
            # platform's ack
            await asyncio.gather(
                *(client.publish(self.topics.activity, b.payload, qos=1) for b in due)
            )
            await self._db(partial(self._outbox.mark_sent, [b.batch_id for b in due], now))
            self.counters.published += len(due)
            self.counters.published_backlog += backlog

    async def _stream_readings(self, client: aiomqtt.Client, source: ReadingsSource) -> None:
        """One readings batch at a time: publish, wait for the platform's ack (publish the
        same batch again after `ack_timeout_s`), then move the cursor. A rejected batch is
        counted and logged and the stream goes on (the readings stay in the store)."""
        loop = asyncio.get_running_loop()
        while True:
            last, readings = await source.next(self.config.readings_batch_size)
            if not readings:
                await asyncio.sleep(1.0)
                continue
            batch = build_readings_batch(self.topics.uscc, self.topics.gateway_id, readings)
            payload = json.dumps(batch).encode()
            if self.config.compression == "gzip":
                payload = gzip.compress(payload, mtime=0)
            bid = str(batch["batch_id"])
            self._readings_sent.append(bid)  # late acks for it are not activity acks
            ack = None
            while ack is None:
                self._awaited[bid] = loop.create_future()
                try:
                    await client.publish(self.topics.readings, payload, qos=1)
                    ack = await asyncio.wait_for(self._awaited[bid], self.config.ack_timeout_s)
                except TimeoutError:
                    continue
                finally:
                    self._awaited.pop(bid, None)
            if ack.status is AckStatus.REJECTED:
                self.counters.readings_rejected += 1
                self.counters.last_readings_rejection = ack.reason
                log.error("platform rejected readings batch %s: %s", bid, ack.reason)
            else:
                self.counters.readings_sent += len(readings)
            await source.advance(last)

    async def _receive_acks(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while True:
            received = [await anext(messages)]
            while len(messages) and len(received) < MAX_ACKS_PER_COMMIT:
                received.append(await anext(messages))
            await self.settle_acks([InboundMessage.of(m) for m in received])

    async def settle_acks(self, received: Sequence[InboundMessage]) -> None:
        """One pass of the ack reader: read each message on its own, hand readings acks to
        the stream waiting for them, record the rest in the outbox in one transaction. A
        message that is no ack of ours is counted, logged and dropped; the others still
        apply."""
        acks = []
        for message in received:
            ack = self._read_ack(message)
            if ack is None:
                continue
            waiting = self._awaited.get(ack.batch_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(ack)  # a readings batch
            elif ack.batch_id not in self._readings_sent:
                acks.append(ack)
        if not acks:
            return
        outcomes = await self._db(partial(self._outbox.apply_acks, acks, self._clock()))
        for ack, outcome in zip(acks, outcomes, strict=True):
            if outcome == "unknown":
                self._drop("unknown-batch", f"no batch {one_line(ack.batch_id)} in the outbox")
                continue
            if outcome == "stale":
                self._drop(
                    "stale",
                    f"a rejection of batch {ack.batch_id} issued at {ack.issued_ns}, not after"
                    " the rejection it was retried from (played back?); it is sent again",
                )
                continue
            self.counters.acks += 1
            if outcome != "settled":
                log.debug("ack for settled batch %s", ack.batch_id)
            elif ack.status is AckStatus.DUPLICATE:
                self.counters.duplicates += 1
            elif ack.status is AckStatus.REJECTED:
                self.counters.rejected += 1
                log.error(
                    "platform rejected batch %s: %s", ack.batch_id, one_line(ack.reason or "")
                )
        self._work.set()  # acks free room in the window

    def _read_ack(self, message: InboundMessage) -> Ack | None:
        """The ack in a message, or None when it is dropped (counted and logged)."""
        try:
            if message.retain:
                raise AckRefused("retained", "a retained message (acks are never retained)")
            if message.topic != self.topics.ack:
                raise AckRefused("misaddressed", f"on topic {one_line(message.topic)}")
            return read_ack(
                message.payload, self.topics.uscc, self.topics.gateway_id, self.ack_keys()
            )
        except AckRefused as refused:
            self._drop(refused.kind, refused.detail, message.payload)
        except Exception as exc:  # a fault in reading one message must not stop the reader
            self._drop("malformed", f"unreadable: {exc!r}", message.payload)
        return None

    def _drop(self, kind: str, detail: str, payload: bytes | None = None) -> None:
        self.counters.bad_acks += 1
        self.counters.acks_dropped[kind] = self.counters.acks_dropped.get(kind, 0) + 1
        held_back = self._drop_log.take()
        if held_back is None:
            return
        log.warning(
            "dropped a message on the ack topic (%s): %s%s%s",
            kind,
            one_line(detail),
            "" if payload is None else f"; it began {excerpt(payload)}",
            f" ({held_back} more dropped and not logged)" if held_back else "",
        )
