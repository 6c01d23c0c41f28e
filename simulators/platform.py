"""Stand-in for the provincial platform: receives activity batches over MQTT and acks them.

Validates every batch against the contract (JSON Schema + content-derived batch id), stores
accepted records in its own SQLite file, recognises re-sent batches as duplicates, and acks
`accepted | duplicate | rejected(reason)` only after its own commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt

from cloud_sync.contract import Ack, AckStatus, ContractError, parse_batch

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id    TEXT PRIMARY KEY,
    uscc        TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    payload     BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    record_id    TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL REFERENCES batches(batch_id),
    uscc         TEXT NOT NULL,
    gateway_id   TEXT NOT NULL,
    meter_id     TEXT NOT NULL,
    point        TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end   TEXT NOT NULL,
    value        TEXT NOT NULL,
    unit         TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    record_json  TEXT NOT NULL,
    UNIQUE (uscc, gateway_id, meter_id, point, period_start, revision)
);
CREATE TABLE IF NOT EXISTS rejections (
    id          INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    reason      TEXT NOT NULL
);
"""


@dataclass
class PlatformCounters:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


class PlatformStore:
    """The platform simulator's SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    def receive(self, topic: str, payload: bytes) -> Ack | None:
        """Store a batch and say what to ack; None when not even a batch id can be told."""
        try:
            batch = parse_batch(payload)
        except ContractError as exc:
            self.conn.execute(
                "INSERT INTO rejections (topic, received_ns, reason) VALUES (?,?,?)",
                (topic, time.time_ns(), str(exc)),
            )
            bid = _batch_id_of(payload)
            return Ack(bid, AckStatus.REJECTED, str(exc)[:1000]) if bid else None
        expected_topic_tail = f"/{batch['uscc']}/{batch['gateway_id']}/activity"
        if not topic.endswith(expected_topic_tail):
            return Ack(batch["batch_id"], AckStatus.REJECTED, "topic does not match the batch")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            ack = self._store(batch, payload)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT" if ack.status is AckStatus.ACCEPTED else "ROLLBACK")
        return ack

    def _store(self, batch: dict[str, object], payload: bytes) -> Ack:
        bid = str(batch["batch_id"])
        if self.conn.execute("SELECT 1 FROM batches WHERE batch_id=?", (bid,)).fetchone():
            return Ack(bid, AckStatus.DUPLICATE)
        self.conn.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?)",
            (bid, batch["uscc"], batch["gateway_id"], time.time_ns(), payload),
        )
        records = batch["records"]
        assert isinstance(records, list)
        for r in records:
            text = json.dumps(r, sort_keys=True)
            old = self.conn.execute(
                "SELECT record_json FROM records WHERE record_id=?", (r["record_id"],)
            ).fetchone()
            if old is not None:
                if old[0] != text:
                    return Ack(
                        bid,
                        AckStatus.REJECTED,
                        f"record {r['record_id']} already stored with other content;"
                        " send a new revision instead",
                    )
                continue
            conflict = self._revision_conflict(r)
            if conflict is not None:
                return Ack(
                    bid,
                    AckStatus.REJECTED,
                    f"record {r['record_id']} (revision {r['revision']}) conflicts with the"
                    f" revisions held for its period: {conflict}",
                )
            self.conn.execute(
                "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r["record_id"],
                    bid,
                    r["uscc"],
                    r["gateway_id"],
                    r["meter_id"],
                    r["point"],
                    r["period_start"],
                    r["period_end"],
                    r["quantity"],
                    r["unit"],
                    r["revision"],
                    text,
                ),
            )
        return Ack(bid, AckStatus.ACCEPTED)

    def _revision_conflict(self, r: dict[str, Any]) -> str | None:
        """Why a record does not fit the revisions held for its period, or None. Revisions may
        arrive in any order (a re-send after an outage); each must name the one before it
        (`supersedes`) and be named by the one after it, where those are held."""
        rows = self.conn.execute(
            "SELECT revision, record_id, json_extract(record_json, '$.supersedes') FROM"
            " records WHERE uscc=? AND gateway_id=? AND meter_id=? AND point=? AND"
            " period_start=? AND revision IN (?, ?)",
            (
                r["uscc"],
                r["gateway_id"],
                r["meter_id"],
                r["point"],
                r["period_start"],
                r["revision"] - 1,
                r["revision"] + 1,
            ),
        ).fetchall()
        for revision, record_id, supersedes in rows:
            if revision == r["revision"] - 1 and record_id != r["supersedes"]:
                return f"supersedes {r['supersedes']}, but revision {revision} is {record_id}"
            if revision == r["revision"] + 1 and supersedes != r["record_id"]:
                return f"revision {revision} supersedes {supersedes}, not this record"
        return None

    def totals(self) -> dict[tuple[str, str], Decimal]:
        """(meter_id, point) -> sum of the latest revision of each period's record."""
        out: dict[tuple[str, str], Decimal] = {}
        for r in self.records():
            key = (str(r["meter_id"]), str(r["point"]))
            out[key] = out.get(key, Decimal(0)) + Decimal(str(r["quantity"]))
        return out

    def records(self, revisions: bool = False) -> list[dict[str, Any]]:
        """The latest revision of every period's record (every revision with `revisions`)."""
        latest = (
            ""
            if revisions
            else " WHERE revision = (SELECT MAX(revision) FROM records b WHERE"
            " b.uscc=a.uscc AND b.gateway_id=a.gateway_id AND b.meter_id=a.meter_id AND"
            " b.point=a.point AND b.period_start=a.period_start)"
        )
        rows = self.conn.execute(
            f"SELECT record_json FROM records a{latest} ORDER BY period_start, meter_id, revision"
        )
        return [json.loads(r[0]) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(batches, records) stored."""
        b = self.conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        r = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return int(b), int(r)


def _batch_id_of(payload: bytes) -> str | None:
    try:
        bid = json.loads(payload).get("batch_id")
    except (ValueError, AttributeError):
        return None
    return bid if isinstance(bid, str) and 0 < len(bid) <= 128 else None


class PlatformReceiver:
    """Subscribes to every gateway's activity topic under `prefix` and acks each batch."""

    def __init__(
        self,
        db_path: Path,
        host: str,
        port: int,
        prefix: str = "tanji/v1",
        client_id: str = "tanji-platform-sim",
    ) -> None:
        self.store = PlatformStore(db_path)
        self.host = host
        self.port = port
        self.prefix = prefix
        self.client_id = client_id
        self.counters = PlatformCounters()
        self.connected = False

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=self.client_id, clean_session=False
                ) as client:
                    self.connected = True
                    backoff = 0.5
                    await client.subscribe(f"{self.prefix}/+/+/activity", qos=1)
                    async for message in client.messages:
                        await self._handle(client, message)
            except aiomqtt.MqttError as exc:
                log.warning("platform: broker unreachable (%s)", exc)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        ack = await asyncio.to_thread(self.store.receive, topic, payload)
        if ack is None:
            self.counters.rejected += 1
            log.warning("platform: unreadable message on %s dropped", topic)
            return
        if ack.status is AckStatus.ACCEPTED:
            self.counters.accepted += 1
        elif ack.status is AckStatus.DUPLICATE:
            self.counters.duplicates += 1
        else:
            self.counters.rejected += 1
            log.warning("platform: rejected %s: %s", ack.batch_id, ack.reason)
        ack_topic = topic.removesuffix("/activity") + "/ack"
        await client.publish(ack_topic, ack.to_json(), qos=1)
