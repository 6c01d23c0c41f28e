"""Delivery: drains the outbox to the platform and settles batches by the platform's acks,
over whichever transport the site names (cloud_sync/transport.py); nothing here knows MQTT.

A send returns when the next hop has the batch (MQTT: the broker's PUBACK); the platform's
application ack says the platform has stored it. A batch stays pending until that ack; after
a reconnect or `ack_timeout_s` without an ack it is sent again, and the platform recognises
the content-derived batch id as a duplicate. At most `max_in_flight` batches wait for acks at
a time; batches made within the last `ack_timeout_s` are live and go first, older ones (the
backlog of an outage) drain oldest first at `backlog_rate` batches per second beside them.

Nothing that arrives as an ack can stop the ack reader: a message that is retained, too
large, malformed, unsigned or forged (with `platform_ack_key`), for another gateway or for
no batch of ours is counted (`acks_dropped`), logged once with a bounded excerpt and
dropped; the other acks of the same pass are applied.
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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cloud_sync.acks import AckKeys, AckRefused, excerpt, one_line, read_ack
from cloud_sync.contract import (
    CONTRACT_VERSION,
    Ack,
    AckStatus,
    Topics,
    build_readings_batch,
    validate,
)
from cloud_sync.outbox import Outbox, OutboxStats, PendingBatch
from cloud_sync.pacing import LogBudget, TokenBucket
from cloud_sync.policy import DeliveryConfig
from cloud_sync.transport import (
    BatchRefused,
    InboundMessage,
    LinkConfig,
    Outgoing,
    Transport,
    TransportError,
)
from gateway.drain import drain

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_SCHEMA_ID = "tanji.status/1"
READINGS_IDLE_S = 1.0  # the readings stream, caught up, looks again after this


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
    batches_refused: int = 0  # activity batch sends the next hop refused (BatchRefused)
    last_refusal: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class ReadingsSource(Protocol):
    """Where the optional raw readings stream reads from: the gateway's store, in store order,
    from a cursor that moves only when the platform has acked a batch."""

    async def next(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """(seq of the last one, up to `limit` readings in contract form) after the cursor."""
        ...

    async def advance(self, seq: int) -> None:
        """The platform has the readings up to `seq`."""
        ...


class CloudSync:
    """Delivery for one gateway over one transport (`link`, a `[mqtt]`/... section) by the
    policy `delivery` (`[delivery]`); `run()` until cancelled."""

    def __init__(
        self,
        db_path: Path,
        topics: Topics,
        link: LinkConfig,
        client_id: str,
        *,
        delivery: DeliveryConfig,
        clock: Callable[[], int] = time.time_ns,
        readings: ReadingsSource | None = None,
    ) -> None:
        self.topics = topics
        self.link = link
        self.policy = delivery
        self.readings = readings if self.policy.readings else None
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
        self._backlog = TokenBucket(self.policy.backlog_rate)
        self._awaited: dict[str, asyncio.Future[Ack]] = {}  # readings batches awaiting acks
        self._readings_sent: collections.deque[str] = collections.deque(maxlen=1000)
        self._drop_log = LogBudget()
        self._refusal_log = LogBudget(burst=5, window_s=600.0)  # refusals recur every resend
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
        if self._keys is None and self.link.platform_ack_key is not None:
            self._keys = self.link.ack_keys()
            self.counters.acks_authenticated = True
        return self._keys

    async def run(self) -> None:
        backoff = 0.5
        transport = self.link.transport(self.topics, self.client_id, self._status)
        if self.link.platform_ack_key is None:
            log.warning(
                "acks are NOT authenticated ([%s] platform_ack_key is not set): anyone who can"
                " send on this gateway's ack channel can settle its batches; allowed when the"
                " %s is on this machine only (docs/platform-contract.md, Ack signatures)",
                self.link.section,
                self.link.peer,
            )
        while True:
            try:
                self.ack_keys()  # an unreadable key: the link stays down and says why
                async with transport:
                    backoff = 0.5
                    await self._session(transport)
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

    async def _session(self, transport: Transport) -> None:
        self.counters.connected = True
        self.counters.connects += 1
        await self._db(self._outbox.forget_sends)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive_acks(transport.received()))
            tg.create_task(self._publish_due(transport))
            if self.readings is not None:
                tg.create_task(self._stream_readings(transport, self.readings))

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

    async def _publish_due(self, transport: Transport) -> None:
        policy = self.policy
        resend_ns = int(policy.ack_timeout_s * 1e9)
        window = policy.max_in_flight
        # wake for acks and new batches at once (the event), else poll: for the backlog's next
        # token, never faster than every 50 ms
        rate = policy.backlog_rate
        idle_s = 1.0 if rate == 0 else max(0.05, min(1.0, 1.0 / rate))
        while True:
            self._work.clear()
            now = self._clock()
            allowance = self._backlog.available(window)
            due = await self._db(
                partial(self._outbox.due, now, resend_ns, now - resend_ns, window, allowance)
            )
            if not due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), timeout=idle_s)
                continue
            self._backlog.take(sum(b.backlog for b in due))
            refused = await self._send_round(transport, due)
            # a refused batch too: sent again after ack_timeout_s, not at once
            await self._db(partial(self._outbox.mark_sent, [b.batch_id for b in due], now))
            taken = [b for b in due if b.batch_id not in refused]
            self.counters.published += len(taken)
            self.counters.published_backlog += sum(b.backlog for b in taken)

    async def _send_round(self, transport: Transport, due: list[PendingBatch]) -> set[str]:
        """Send a round of batches at once, each returning when the next hop has it (it stays
        pending until the platform's ack); the ids of those the next hop refused (counted,
        logged within a budget). A link failure cancels the rest of the round and is raised."""
        refused: set[str] = set()

        async def send(batch: PendingBatch) -> None:
            try:
                await transport.send(Outgoing("activity", batch.batch_id, batch.payload))
            except BatchRefused as exc:
                refused.add(batch.batch_id)
                self._note_refusal(str(exc))

        try:
            async with asyncio.TaskGroup() as tg:
                for batch in due:
                    tg.create_task(send(batch))
        except* TransportError as failed:
            raise failed.exceptions[0] from None
        return refused

    def _note_refusal(self, text: str) -> None:
        self.counters.batches_refused += 1
        self.counters.last_refusal = text
        held_back = self._refusal_log.take()
        if held_back is not None:
            log.error(
                "%s; it stays in the outbox and is sent again after %g s%s",
                one_line(text),
                self.policy.ack_timeout_s,
                f" ({held_back} more refusals not logged)" if held_back else "",
            )

    async def _stream_readings(self, transport: Transport, source: ReadingsSource) -> None:
        """The raw readings, drained from the store's cursor (gateway.drain) one batch at a
        time: each is sent and the cursor moves when the platform acked it."""

        async def send(readings: list[dict[str, Any]]) -> None:
            await self._send_readings(transport, readings)

        await drain(source, send, self.policy.readings_batch_size, READINGS_IDLE_S)

    async def _send_readings(self, transport: Transport, readings: list[dict[str, Any]]) -> None:
        """Send one readings batch until the platform acks it (the same batch again after
        `ack_timeout_s`). A batch rejected by the platform's ack, or refused by the next hop
        (BatchRefused), is counted and logged and counts as done (the readings stay in the
        store)."""
        loop = asyncio.get_running_loop()
        batch = build_readings_batch(self.topics.uscc, self.topics.gateway_id, readings)
        payload = json.dumps(batch).encode()
        if self.policy.compression == "gzip":
            payload = gzip.compress(payload, mtime=0)
        bid = str(batch["batch_id"])
        self._readings_sent.append(bid)  # late acks for it are not activity acks
        ack = None
        while ack is None:
            self._awaited[bid] = loop.create_future()
            try:
                await transport.send(Outgoing("readings", bid, payload))
                ack = await asyncio.wait_for(self._awaited[bid], self.policy.ack_timeout_s)
            except TimeoutError:
                continue
            except BatchRefused as refused:  # as sent, it never will be taken: as rejected
                ack = Ack(bid, AckStatus.REJECTED, str(refused))
            finally:
                self._awaited.pop(bid, None)
        if ack.status is AckStatus.REJECTED:
            self.counters.readings_rejected += 1
            self.counters.last_readings_rejection = ack.reason
            log.error("platform rejected readings batch %s: %s", bid, ack.reason)
        else:
            self.counters.readings_sent += len(readings)

    async def _receive_acks(self, received: AsyncIterator[list[InboundMessage]]) -> None:
        async for messages in received:  # at most MAX_PER_STEP (the seam's): one transaction
            await self.settle_acks(messages)

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
            if message.topic is not None and message.topic != self.topics.ack:
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
            "dropped a message %s (%s): %s%s%s",
            self.link.ack_channel,
            kind,
            one_line(detail),
            "" if payload is None else f"; it began {excerpt(payload)}",
            f" ({held_back} more dropped and not logged)" if held_back else "",
        )
