"""Outbox: signed-off activity batches waiting for the platform's ack, in the gateway's SQLite.

A batch is enqueued in the same transaction that stores its records (`enqueue`), is published
until the platform acks it, and only an ack moves it out of `pending`. Nothing here knows
MQTT; nothing here knows Modbus.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from cloud_sync.contract import Ack, AckStatus, build_batch
from gateway.models import ActivityRecord

OUTBOX_TABLE = "outbox"  # the gateway's store reads `batch_id` and `state` to evict safely

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,          -- enqueue order: oldest is sent first
    batch_id     TEXT    NOT NULL UNIQUE,
    payload      BLOB    NOT NULL,
    record_count INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending',  -- pending | acked | rejected | held
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_ns   INTEGER NOT NULL,
    last_sent_ns INTEGER,
    acked_ns     INTEGER,
    ack_status   TEXT,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq);
"""


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def enqueue(
    conn: sqlite3.Connection,
    uscc: str,
    gateway_id: str,
    records: Sequence[ActivityRecord],
    batch_size: int,
    now_ns: int,
    held: bool = False,
) -> list[str]:
    """Add records as batches of at most `batch_size`; call inside the caller's transaction.
    `held` batches are stored but not sent (the site holds back records without a valid
    calibration) until released.

    Returns the batch ids. A batch whose id already exists is not added twice.
    """
    ids = []
    for i in range(0, len(records), batch_size):
        batch = build_batch(uscc, gateway_id, records[i : i + batch_size])
        conn.execute(
            "INSERT OR IGNORE INTO outbox (batch_id, payload, record_count, created_ns, state)"
            " VALUES (?,?,?,?,?)",
            (
                batch["batch_id"],
                json.dumps(batch).encode(),
                len(batch["records"]),
                now_ns,
                "held" if held else "pending",
            ),
        )
        ids.append(batch["batch_id"])
    return ids


@dataclass(frozen=True)
class PendingBatch:
    batch_id: str
    payload: bytes
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    acked: int
    rejected: int
    held: int
    records_acked: int
    records_held: int
    oldest_pending_ns: int | None


class Outbox:
    """Reads and updates the outbox table on its own connection (one caller at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        create_schema(conn)

    def due(self, now_ns: int, resend_after_ns: int, limit: int = 100) -> list[PendingBatch]:
        """Pending batches never sent or not acked within `resend_after_ns`, oldest first."""
        rows = self.conn.execute(
            "SELECT batch_id, payload, attempts FROM outbox WHERE state='pending'"
            " AND (last_sent_ns IS NULL OR last_sent_ns <= ?) ORDER BY seq LIMIT ?",
            (now_ns - resend_after_ns, limit),
        ).fetchall()
        return [PendingBatch(b, bytes(p), a) for b, p, a in rows]

    def mark_sent(self, batch_id: str, now_ns: int) -> None:
        self.conn.execute(
            "UPDATE outbox SET attempts=attempts+1, last_sent_ns=? WHERE batch_id=?",
            (now_ns, batch_id),
        )

    def forget_sends(self) -> None:
        """After a reconnect every unacked batch is due again at once."""
        self.conn.execute("UPDATE outbox SET last_sent_ns=NULL WHERE state='pending'")

    def apply_ack(self, ack: Ack, now_ns: int) -> bool:
        """Record the platform's verdict; False when the batch is unknown or already settled."""
        state = "rejected" if ack.status is AckStatus.REJECTED else "acked"
        cur = self.conn.execute(
            "UPDATE outbox SET state=?, acked_ns=?, ack_status=?, reason=?"
            " WHERE batch_id=? AND state='pending'",
            (state, now_ns, ack.status.value, ack.reason, ack.batch_id),
        )
        return cur.rowcount == 1

    def stats(self) -> OutboxStats:
        rows = dict(
            self.conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        )
        acked_records, held_records, oldest = self.conn.execute(
            "SELECT (SELECT COALESCE(SUM(record_count),0) FROM outbox WHERE state='acked'),"
            " (SELECT COALESCE(SUM(record_count),0) FROM outbox WHERE state='held'),"
            " (SELECT MIN(created_ns) FROM outbox WHERE state='pending')"
        ).fetchone()
        return OutboxStats(
            pending=int(rows.get("pending", 0)),
            acked=int(rows.get("acked", 0)),
            rejected=int(rows.get("rejected", 0)),
            held=int(rows.get("held", 0)),
            records_acked=int(acked_records),
            records_held=int(held_records),
            oldest_pending_ns=int(oldest) if oldest is not None else None,
        )
