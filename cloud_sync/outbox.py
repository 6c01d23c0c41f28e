"""Outbox: signed-off activity batches waiting for the platform's ack, in the gateway's SQLite.

A batch is enqueued in the same transaction that stores its records (`enqueue`), is published
until the platform acks it, and only an ack moves it out of `pending`. Nothing here knows
MQTT; nothing here knows Modbus.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from cloud_sync.contract import Ack, AckStatus, build_batch
from gateway.errors import TanjiError
from gateway.models import ActivityRecord

# the batches the platform settled (acked, rejected, discarded by an operator): their records
# are done with, so the store may evict their readings (it shares this file)
SETTLED_BATCHES = "SELECT batch_id FROM outbox WHERE state IN ('acked', 'rejected', 'discarded')"

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY,          -- enqueue order: oldest is sent first
    batch_id     TEXT    NOT NULL UNIQUE,
    payload      BLOB    NOT NULL,
    record_count INTEGER NOT NULL,
    state        TEXT    NOT NULL DEFAULT 'pending',  -- pending | acked | rejected (a dead
                                                  -- letter) | discarded | held
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_ns   INTEGER NOT NULL,
    last_sent_ns INTEGER,
    acked_ns     INTEGER,
    ack_status   TEXT,
    reason       TEXT,
    verdict_ns   INTEGER                       -- the applied ack's issued_ns (platform clock)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, seq);
"""
ADDED_COLUMNS = (("verdict_ns", "INTEGER"),)  # added since the table's first release


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
    for column, sql_type in ADDED_COLUMNS:
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE outbox ADD COLUMN {column} {sql_type}")
            except sqlite3.OperationalError as exc:  # another process added it just now
                if "duplicate column" not in str(exc):
                    raise


def enqueue(
    conn: sqlite3.Connection,
    uscc: str,
    gateway_id: str,
    records: Sequence[ActivityRecord],
    batch_size: int,
    now_ns: int,
    held: bool = False,
    compress: bool = False,
) -> list[str]:
    """Add records as batches of at most `batch_size`; call inside the caller's transaction.
    `held` batches are stored but not sent (the site holds back records without a valid
    calibration) until released. `compress` stores (and sends) the payload gzip-compressed.

    Returns the batch ids. A batch whose id already exists is not added twice.
    """
    ids = []
    for i in range(0, len(records), batch_size):
        batch = build_batch(uscc, gateway_id, records[i : i + batch_size])
        payload = json.dumps(batch).encode()
        conn.execute(
            "INSERT OR IGNORE INTO outbox (batch_id, payload, record_count, created_ns, state)"
            " VALUES (?,?,?,?,?)",
            (
                batch["batch_id"],
                gzip.compress(payload, mtime=0) if compress else payload,
                len(batch["records"]),
                now_ns,
                "held" if held else "pending",
            ),
        )
        ids.append(batch["batch_id"])
    return ids


AckOutcome = Literal["settled", "settled-before", "stale", "unknown"]


@dataclass(frozen=True)
class PendingBatch:
    batch_id: str
    payload: bytes
    attempts: int
    backlog: bool  # older than the live window: sent at the backlog rate


@dataclass(frozen=True)
class Parked:
    """A batch that is not on its way: rejected by the platform (a dead letter) or held by
    the site (records without a valid calibration)."""

    batch_id: str
    state: str
    record_count: int
    created_ns: int
    reason: str | None


class OutboxError(TanjiError, ValueError):
    """An outbox command that does not fit the batch's state."""


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

    def due(
        self,
        now_ns: int,
        resend_after_ns: int,
        live_after_ns: int,
        window: int,
        backlog_allowance: int,
    ) -> list[PendingBatch]:
        """What to publish now, oldest first within each lane: pending batches never sent or
        not acked within `resend_after_ns`, at most `window` unacked in flight in all. Batches
        made at or after `live_after_ns` are live and go first; older ones (the backlog of an
        outage) take at most `backlog_allowance` and at least one slot when they may go, so
        neither lane starves the other."""
        resend_before = now_ns - resend_after_ns
        # sent after `now` means the clock was set back since: due again, not in flight
        (in_flight,) = self.conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state='pending' AND last_sent_ns > ?"
            " AND last_sent_ns <= ?",
            (resend_before, now_ns),
        ).fetchone()
        free = window - int(in_flight)
        if free <= 0:
            return []
        due = (
            "SELECT batch_id, payload, attempts FROM outbox WHERE state='pending'"
            " AND (last_sent_ns IS NULL OR last_sent_ns <= ? OR last_sent_ns > ?)"
            " AND created_ns {} ? ORDER BY seq LIMIT ?"
        )

        def lane(op: str, limit: int) -> list[tuple[str, bytes, int]]:
            if limit <= 0:
                return []
            rows = self.conn.execute(
                due.format(op), (resend_before, now_ns, live_after_ns, limit)
            ).fetchall()
            return [(str(b), bytes(p), int(a)) for b, p, a in rows]

        live = lane(">=", free)
        backlog = lane("<", min(backlog_allowance, free - len(live)))
        if not backlog and len(live) == free > 1 and backlog_allowance > 0:
            backlog = lane("<", 1)  # live fills the window: the backlog keeps one slot
            live = live[: free - len(backlog)]
        return [PendingBatch(*row, False) for row in live] + [
            PendingBatch(*row, True) for row in backlog
        ]

    def mark_sent(self, batch_ids: Iterable[str], now_ns: int) -> None:
        with _transaction(self.conn):
            self.conn.executemany(
                "UPDATE outbox SET attempts=attempts+1, last_sent_ns=? WHERE batch_id=?",
                [(now_ns, b) for b in batch_ids],
            )

    def forget_sends(self) -> None:
        """After a reconnect every unacked batch is due again at once."""
        self.conn.execute("UPDATE outbox SET last_sent_ns=NULL WHERE state='pending'")

    def apply_acks(self, acks: Sequence[Ack], now_ns: int) -> list[AckOutcome]:
        """Record the platform's verdicts in one transaction; per ack what it did: `settled`
        (a pending batch took its verdict), `settled-before` (the batch already had one: a
        repeated ack), `stale` (a signed rejection issued no later than the verdict the
        batch had before it was retried: an old rejection played back) or `unknown` (no
        such batch here)."""
        outcomes: list[AckOutcome] = []
        with _transaction(self.conn):
            for ack in acks:
                state = "rejected" if ack.status is AckStatus.REJECTED else "acked"
                # a retried dead letter keeps its verdict_ns: only a newer rejection counts
                newer = state == "rejected" and ack.issued_ns is not None
                cur = self.conn.execute(
                    "UPDATE outbox SET state=?, acked_ns=?, ack_status=?, reason=?, verdict_ns=?"
                    " WHERE batch_id=? AND state='pending'"
                    + (" AND (verdict_ns IS NULL OR verdict_ns < ?)" if newer else ""),
                    (state, now_ns, ack.status.value, ack.reason, ack.issued_ns, ack.batch_id)
                    + ((ack.issued_ns,) if newer else ()),
                )
                if cur.rowcount == 1:
                    outcomes.append("settled")
                    continue
                row = self.conn.execute(
                    "SELECT state FROM outbox WHERE batch_id=?", (ack.batch_id,)
                ).fetchone()
                if row is None:
                    outcomes.append("unknown")
                else:
                    outcomes.append("stale" if row[0] == "pending" else "settled-before")
        return outcomes

    def parked(self) -> list[Parked]:
        """Dead letters and held batches, oldest first."""
        rows = self.conn.execute(
            "SELECT batch_id, state, record_count, created_ns, reason FROM outbox"
            " WHERE state IN ('rejected', 'held') ORDER BY seq"
        )
        return [Parked(str(b), str(st), int(n), int(c), r) for b, st, n, c, r in rows]

    def retry(self, batch_id: str, now_ns: int) -> str:
        """Send a dead letter again (after the cause at the platform was fixed)."""
        return self._move(batch_id, ("rejected",), "pending", None, now_ns)

    def release(self, batch_id: str, now_ns: int) -> str:
        """Send a held batch after all."""
        return self._move(batch_id, ("held",), "pending", None, now_ns)

    def discard(self, batch_id: str, reason: str, now_ns: int) -> str:
        """Give up on a dead letter or a held batch: it stays in the store, marked discarded
        with the reason, and is never sent."""
        if not reason.strip():
            raise OutboxError("discarding needs a reason")
        return self._move(batch_id, ("rejected", "held"), "discarded", reason, now_ns)

    def _move(
        self, batch_id: str, sources: tuple[str, ...], target: str, reason: str | None, now_ns: int
    ) -> str:
        row = self.conn.execute(
            "SELECT state FROM outbox WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        if row is None:
            raise OutboxError(f"no batch {batch_id!r} in the outbox")
        if row[0] not in sources:
            raise OutboxError(f"batch {batch_id} is {row[0]}, not {' or '.join(sources)}")
        self.conn.execute(
            "UPDATE outbox SET state = ?, last_sent_ns = NULL,"
            " reason = COALESCE(?, reason), acked_ns = CASE WHEN ? = 'discarded' THEN ? END"
            " WHERE batch_id = ?",
            (target, reason, target, now_ns, batch_id),
        )
        return str(row[0])

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


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One durable commit for many statements (the connection is in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
