"""Drains the outbox to the platform over MQTT and settles batches by the platform's acks.

Delivery: QoS 1 publish (the broker has it), then an application ack from the platform
(the platform has stored it). A batch stays pending until that ack; after a reconnect or
`ack_timeout_s` without an ack it is published again, and the platform recognises the
content-derived batch id as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import aiomqtt

from cloud_sync.contract import Ack, AckStatus, ContractError, Topics
from cloud_sync.outbox import Outbox, OutboxStats

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    keepalive_s: int = 30
    ack_timeout_s: float = 30.0
    publish_timeout_s: float = 10.0


@dataclass
class SyncCounters:
    """What the sync loop has done since start (for status output)."""

    connected: bool = False
    connects: int = 0
    published: int = 0
    acks: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_acks: int = 0
    last_error: str | None = None
    disconnects: int = 0


class CloudSync:
    """One MQTT session to the platform for one gateway; `run()` until cancelled."""

    def __init__(
        self,
        db_path: Path,
        topics: Topics,
        settings: MqttSettings,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.topics = topics
        self.settings = settings
        self.counters = SyncCounters()
        self._clock = clock
        self._conn = sqlite3.connect(
            db_path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._conn.execute("PRAGMA synchronous=FULL")
        self._outbox = Outbox(self._conn)
        self._db_lock = asyncio.Lock()
        self._work = asyncio.Event()

    def wake(self) -> None:
        """New batches were enqueued: publish now rather than at the next poll."""
        self._work.set()

    async def _db(self, fn: Callable[[], T]) -> T:
        async with self._db_lock:
            return await asyncio.to_thread(fn)

    async def stats(self) -> OutboxStats:
        return await self._db(self._outbox.stats)

    async def run(self) -> None:
        backoff = 0.5
        s = self.settings
        will = aiomqtt.Will(self.topics.status, _status("offline"), qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(
                    s.host,
                    s.port,
                    identifier=s.client_id,
                    clean_session=False,
                    keepalive=s.keepalive_s,
                    will=will,
                    timeout=s.publish_timeout_s,
                ) as client:
                    self.counters.connected = True
                    self.counters.connects += 1
                    backoff = 0.5
                    log.info("connected to broker %s:%d", s.host, s.port)
                    await client.subscribe(self.topics.ack, qos=1)
                    await client.publish(self.topics.status, _status("online"), qos=1, retain=True)
                    await self._db(self._outbox.forget_sends)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive_acks(client))
                        tg.create_task(self._publish_due(client))
            except* aiomqtt.MqttError as group:
                self._note_error(str(group.exceptions[0]))
            self.counters.connected = False
            delay = backoff * random.uniform(0.8, 1.2)
            log.warning(
                "broker unreachable (%s); retrying in %.1f s", self.counters.last_error, delay
            )
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, 30.0)

    def _note_error(self, text: str) -> None:
        self.counters.last_error = text
        self.counters.disconnects += 1

    async def _publish_due(self, client: aiomqtt.Client) -> None:
        resend_ns = int(self.settings.ack_timeout_s * 1e9)
        while True:
            self._work.clear()
            due = await self._db(lambda: self._outbox.due(self._clock(), resend_ns))
            for batch in due:
                await client.publish(self.topics.activity, batch.payload, qos=1)
                # the broker has it (PUBACK); it stays pending until the platform's ack
                await self._db(partial(self._outbox.mark_sent, batch.batch_id, self._clock()))
                self.counters.published += 1
            if len(due) == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), timeout=1.0)

    async def _receive_acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            try:
                ack = Ack.from_json(bytes(payload))
            except ContractError as exc:
                self.counters.bad_acks += 1
                log.warning("ignored malformed ack on %s: %s", message.topic, exc)
                continue
            settled = await self._db(partial(self._outbox.apply_ack, ack, self._clock()))
            self.counters.acks += 1
            if ack.status is AckStatus.DUPLICATE:
                self.counters.duplicates += 1
            elif ack.status is AckStatus.REJECTED:
                self.counters.rejected += 1
                log.error("platform rejected batch %s: %s", ack.batch_id, ack.reason)
            if not settled:
                log.debug("ack for unknown or settled batch %s", ack.batch_id)
            self._work.set()  # an ack may free the next batch


def _status(state: str) -> bytes:
    return json.dumps({"schema": "tanji.status/1", "state": state}).encode()
