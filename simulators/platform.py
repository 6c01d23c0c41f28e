"""Stand-in for the provincial platform: receives activity batches over MQTT (and HTTPS,
`simulators/platform_https.py`) and acks them.

`PlatformStore` (simulators/platform_store.py) validates, stores and decides; the `PlatformDesk`
here answers each batch, whichever way it came, with an ack signed by the platform's key
(`ack_signer`: kept in a file, its public half beside it for the gateways'
`platform_ack_key`), only after its own commit. Several instances split the load through an
MQTT shared subscription (`$share/{group}/...`) and one PostgreSQL database: the shape of a
provincial deployment on an existing broker cluster.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt

from cloud_sync import (
    Ack,
    AckSigner,
    AckStatus,
    ContractError,
    MqttConfig,
    TransportError,
)
from gateway.errors import TanjiFailure
from simulators.platform_store import PlatformStore

__all__ = [
    "SIMULATOR_ID",
    "PlatformCounters",
    "PlatformDesk",
    "PlatformReceiver",
    "PlatformStore",
    "ack_signer",
    "public_key_path",
]

log = logging.getLogger(__name__)

GROUP_COMMIT_MAX = 100  # batches stored in one commit when they arrive together
SIMULATOR_ID = "tanji-platform-sim"  # MQTT client id and `received_by` unless told otherwise


@dataclass
class PlatformCounters:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


def public_key_path(key_path: Path) -> Path:
    """Where the public half of the ack signing key at `key_path` is written."""
    return key_path.with_name(key_path.stem + ".pub.pem")


def ack_signer(key_path: Path) -> AckSigner:
    """The platform's ack signing key kept at `key_path` (PEM, readable by its owner only),
    made on first use; its public key is (re)written beside it (`public_key_path`). Instances
    sharing one key file may start together: exactly one makes the key. ValueError naming
    the file when it cannot be read or written."""
    try:
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            fresh = AckSigner.generate()
            draft = key_path.with_name(f".{key_path.name}.{os.getpid()}.new")
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:  # never readable by others, not even for a moment
                f.write(fresh.private_pem())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(draft, key_path)  # fails when another instance was first
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        signer = AckSigner.from_pem(key_path.read_bytes())
        public = public_key_path(key_path)
        if not public.exists() or public.read_bytes() != signer.public_pem():
            draft = public.with_name(f".{public.name}.{os.getpid()}.new")
            draft.write_bytes(signer.public_pem())
            draft.replace(public)  # a gateway reading it sees the old file or the whole new one
    except OSError as exc:
        raise ValueError(f"ack signing key {key_path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"ack signing key {key_path}: {exc}") from None
    return signer


class Interrupted(TanjiFailure):
    """A batch was in a group whose commit was cut short: whether it was stored is not known,
    so it gets no ack (the gateway sends it again and hears `duplicate` if it was)."""


class PlatformDesk:
    """Answers batches, whichever way they came (MQTT, HTTPS): stores a group of them in one
    commit (one at a time: the store has one connection), counts the verdicts and signs an
    ack for each. The MQTT receiver and the HTTPS listener of one simulator share one desk."""

    def __init__(self, store: PlatformStore, signer: AckSigner | None = None) -> None:
        self.store = store
        self.signer = signer or AckSigner.generate()
        self.counters = PlatformCounters()
        self._issued_ns = 0
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[str, bytes, asyncio.Future[bytes | None]]] = []

    async def answer(self, batches: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """Store `(address, payload)` batches in one commit, then the signed ack of each; None
        where no ack can be given (not even a batch id, or an address that names no gateway).
        Raises what the database raised: then nothing was stored, nothing is acked."""
        async with self._lock:
            return await self._answer(batches)

    async def answer_one(self, address: str, payload: bytes) -> bytes | None:
        """One batch of several arriving at once (HTTPS requests): those waiting are stored
        together, up to GROUP_COMMIT_MAX in one commit, each answered on its own. Raises what
        the database raised (the store is then reopened for the next)."""
        mine: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((address, payload, mine))
        try:
            async with self._lock:
                while not mine.done():
                    group = self._waiting[:GROUP_COMMIT_MAX]
                    del self._waiting[: len(group)]
                    await self._answer_group(group)
        except asyncio.CancelledError:  # the client went away: do not store it for nobody
            self._waiting = [w for w in self._waiting if w[2] is not mine]
            if mine.done() and not mine.cancelled():
                mine.exception()  # seen: not reported as never retrieved
            raise
        return await mine

    async def _answer_group(
        self, group: list[tuple[str, bytes, asyncio.Future[bytes | None]]]
    ) -> None:
        try:
            answers = await self._answer([(address, payload) for address, payload, _ in group])
        except asyncio.CancelledError:  # the others in the group must not wait for ever
            for *_, waiter in group:
                if not waiter.done():
                    waiter.set_exception(Interrupted("the platform was interrupted"))
            raise
        except Exception as exc:
            for *_, waiter in group:
                waiter.set_exception(exc)
            log.error("platform: database: %s; reopening it", exc)
            await self.recover()
            return
        for (*_, waiter), answer in zip(group, answers, strict=True):
            waiter.set_result(answer)

    async def recover(self) -> None:
        """A fresh database connection after a failure; logged when that fails too (the next
        batch tries again)."""
        try:
            await asyncio.to_thread(self.store.reopen)
        except Exception as again:
            log.error("platform: database still unavailable: %s", again)

    async def _answer(self, batches: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        acks = await asyncio.to_thread(self.store.receive_many, batches) if batches else []
        return [self._signed(address, ack) for (address, _), ack in zip(batches, acks, strict=True)]

    def _signed(self, address: str, ack: Ack | None) -> bytes | None:
        if ack is None:
            self.counters.rejected += 1
            log.warning("platform: unreadable message on %s dropped", address)
            return None
        if ack.status is AckStatus.ACCEPTED:
            self.counters.accepted += 1
        elif ack.status is AckStatus.DUPLICATE:
            self.counters.duplicates += 1
        else:
            self.counters.rejected += 1
            log.warning("platform: rejected %s: %s", ack.batch_id, ack.reason)
        uscc, gateway_id = address.rsplit("/", 1)[0].rsplit("/", 2)[-2:]
        try:
            return self.signer.sign(ack, uscc, gateway_id, self._issue())
        except ContractError as exc:  # e.g. an address that names no gateway
            log.warning("platform: no ack for a message on %s: %s", address, exc)
            return None

    def _issue(self) -> int:
        """When an ack is signed: the clock, but never the same or an earlier value twice (a
        gateway believes a batch's second rejection only when issued after its first)."""
        self._issued_ns = max(time.time_ns(), self._issued_ns + 1)
        return self._issued_ns


class PlatformReceiver:
    """Subscribes to every gateway's activity and readings topics under the prefix and acks
    each batch on the gateway's ack topic, signed with `signer` (default: a key made for this
    run only) or by the `desk` it shares with an HTTPS listener; with a `group`, through a
    shared subscription so that instances split the load."""

    def __init__(
        self,
        db: Path | str,
        mqtt: MqttConfig,
        client_id: str = SIMULATOR_ID,
        group: str | None = None,
        signer: AckSigner | None = None,
        desk: PlatformDesk | None = None,
    ) -> None:
        self.desk = desk or PlatformDesk(PlatformStore(db, client_id), signer)
        self.mqtt = mqtt
        self.client_id = client_id
        self.group = group
        self.connected = False
        self.last_error: str | None = None

    @property
    def store(self) -> PlatformStore:
        return self.desk.store

    @property
    def signer(self) -> AckSigner:
        return self.desk.signer

    @property
    def counters(self) -> PlatformCounters:
        return self.desk.counters

    @property
    def subscriptions(self) -> list[str]:
        topics = [f"{self.mqtt.topic_prefix}/+/+/{kind}" for kind in ("activity", "readings")]
        return [f"$share/{self.group}/{t}" if self.group else t for t in topics]

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with aiomqtt.Client(**self.mqtt.client_kwargs(self.client_id)) as client:
                    self.connected = True
                    backoff = 0.5
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    messages = client.messages
                    while True:
                        received = [await anext(messages)]
                        while len(messages) and len(received) < GROUP_COMMIT_MAX:
                            received.append(await anext(messages))
                        await self._handle(client, received)
            except (aiomqtt.MqttError, TransportError) as exc:
                self.last_error = self.mqtt.describe_error(exc)
                log.warning("platform: broker unreachable (%s)", self.last_error)
            except Exception as exc:  # the database failed: nothing acked, the gateways resend
                self.last_error = f"database: {exc}"
                log.error("platform: %s; reconnecting", self.last_error, exc_info=exc)
                await self.desk.recover()
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _handle(self, client: aiomqtt.Client, received: list[aiomqtt.Message]) -> None:
        batches = [
            (m.topic.value, m.payload if isinstance(m.payload, bytes) else b"") for m in received
        ]
        answers = await self.desk.answer(batches)
        for (topic, _), payload in zip(batches, answers, strict=True):
            if payload is not None:
                await client.publish(topic.rsplit("/", 1)[0] + "/ack", payload, qos=1)
