"""Durable SQLite store for readings and activity records (the gateway's source of truth).

Durability policy: WAL journal with `synchronous=FULL`, so a transaction is on disk (fsynced)
when `commit` returns and survives `kill -9` and power loss. Readings are written in batches
by a single writer; the outbox (cloud_sync) lives in the same file. Never holds readings in
memory beyond the caller's commit interval.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.models import (
    ActivityRecord,
    PointKind,
    Quality,
    QualityStatus,
    Quantity,
    Reading,
)
from gateway.periods import datetime_to_ns

SCHEMA_VERSION = 3  # PRAGMA user_version; 1 keyed points by quantity, 2 by point name, 3 by series

# one statement each (executescript would COMMIT in the middle of our transaction)
SCHEMA_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS series (
    id           INTEGER PRIMARY KEY,  -- one point of one meter
    meter_id     TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    quantity     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    unit         TEXT    NOT NULL,
    UNIQUE (meter_id, point)
)
""",
    """
CREATE TABLE IF NOT EXISTS readings (
    id           INTEGER PRIMARY KEY,
    series       INTEGER NOT NULL,  -- series.id, guaranteed by register_series (a declared
                                    -- foreign key would cost a lookup on every insert)
    ts_ns        INTEGER NOT NULL,
    source_ts_ns INTEGER,
    raw          BLOB    NOT NULL,
    value        TEXT,             -- exact decimal as text, NULL when quality is bad
    quality      TEXT    NOT NULL,
    reason       TEXT
)
""",
    """
CREATE INDEX IF NOT EXISTS readings_series_ts ON readings (series, ts_ns)
""",
    """
CREATE TABLE IF NOT EXISTS activity_records (
    record_id    TEXT PRIMARY KEY,
    meter_id     TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    period_start_ns INTEGER NOT NULL,
    period_end_ns   INTEGER NOT NULL,
    revision     INTEGER NOT NULL,
    record_json  TEXT    NOT NULL,
    created_ns   INTEGER NOT NULL,
    UNIQUE (meter_id, point, period_start_ns, revision)
)
""",
)


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with the documented durability settings (autocommit; explicit txns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _reading_from_row(row: tuple[Any, ...]) -> Reading:
    meter_id, point, quantity, kind, unit, ts_ns, source_ts_ns, raw, value, quality, reason = row
    return Reading(
        meter_id=str(meter_id),
        point=str(point),
        quantity=Quantity(quantity),
        kind=PointKind(kind),
        unit=str(unit),
        ts_ns=int(ts_ns),
        source_ts_ns=int(source_ts_ns) if source_ts_ns is not None else None,
        raw=bytes(raw),
        value=Decimal(str(value)) if value is not None else None,
        quality=Quality(status=QualityStatus(quality), reason=reason),
    )


_READING_COLUMNS = (
    "s.meter_id, s.point, s.quantity, s.kind, s.unit,"
    " r.ts_ns, r.source_ts_ns, r.raw, r.value, r.quality, r.reason"
)
_SELECT_READINGS = f"SELECT {_READING_COLUMNS} FROM readings r JOIN series s ON s.id = r.series"


class StoreError(Exception):
    """The database file cannot be used by this version of tanji (message says why)."""


class Store:
    """The gateway's tables on one SQLite connection. Not thread-safe: one caller at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = connect(path)
            usable, version = self._create_schema()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        if not usable:
            self.conn.close()
            raise StoreError(
                f"{path}: store schema version {version}, this tanji needs {SCHEMA_VERSION};"
                " move the old file aside (it is not modified) and start with a new one"
            )
        self._series: dict[tuple[str, str], int] = {
            (m, p): i for i, m, p in self.conn.execute("SELECT id, meter_id, point FROM series")
        }

    def _create_schema(self) -> tuple[bool, int]:
        with transaction(self.conn):
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            empty = not self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name='readings'"
            ).fetchone()
            usable = empty or version == SCHEMA_VERSION
            if usable:
                for statement in SCHEMA_STATEMENTS:
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return usable, int(version)

    def close(self) -> None:
        self.conn.close()

    def register_series(
        self, meter_id: str, point: str, quantity: Quantity, kind: PointKind, unit: str
    ) -> None:
        """Declare a configured point before its readings arrive. A point name keeps its
        quantity, kind and unit for the life of the store: StoreError says when the
        configuration changed one of them (the point then needs a new name)."""
        try:
            row = self.conn.execute(
                "SELECT id, quantity, kind, unit FROM series WHERE meter_id=? AND point=?",
                (meter_id, point),
            ).fetchone()
            if row is None:
                with transaction(self.conn):
                    cur = self.conn.execute(
                        "INSERT INTO series (meter_id, point, quantity, kind, unit)"
                        " VALUES (?,?,?,?,?)",
                        (meter_id, point, quantity, kind, unit),
                    )
                self._series[(meter_id, point)] = int(cur.lastrowid or 0)
                return
        except sqlite3.Error as exc:  # e.g. another process holds the database locked
            raise StoreError(f"{self.path}: cannot register point {point!r}: {exc}") from None
        stored = (row[1], row[2], row[3])
        if stored != (quantity.value, kind.value, unit):
            raise StoreError(
                f"{self.path}: point {point!r} of meter {meter_id!r} holds readings of"
                f" {'/'.join(stored)}, the configuration now says"
                f" {quantity.value}/{kind.value}/{unit}; give the changed point a new name"
            )

    # --- readings ----------------------------------------------------------------------------

    def append_readings(self, readings: Sequence[Reading]) -> None:
        """Commit a batch of readings durably (one fsynced transaction). The gateway registers
        its points at start-up; a point seen here first is registered on the way."""
        if not readings:
            return
        try:
            self._insert_readings(readings)
        except KeyError:  # an unregistered point: the transaction was rolled back
            for r in readings:
                if (r.meter_id, r.point) not in self._series:
                    self.register_series(r.meter_id, r.point, r.quantity, r.kind, r.unit)
            self._insert_readings(readings)

    def _insert_readings(self, readings: Sequence[Reading]) -> None:
        series = self._series
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO readings (series, ts_ns, source_ts_ns, raw, value, quality, reason)"
                " VALUES (?,?,?,?,?,?,?)",
                (  # StrEnum members bind as their text value
                    (
                        series[(r.meter_id, r.point)],
                        r.ts_ns,
                        r.source_ts_ns,
                        r.raw,
                        str(r.value) if r.value is not None else None,
                        r.quality.status,
                        r.quality.reason,
                    )
                    for r in readings
                ),
            )

    def readings(self, meter_id: str, point: str, start_ns: int, end_ns: int) -> list[Reading]:
        """Readings of one point with start_ns <= ts < end_ns, oldest first."""
        rows = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns>=? AND r.ts_ns<?"
            " ORDER BY r.ts_ns, r.id",
            (self._series.get((meter_id, point), -1), start_ns, end_ns),
        ).fetchall()
        return [_reading_from_row(r) for r in rows]

    def last_good_before(self, meter_id: str, point: str, ts_ns: int) -> Reading | None:
        row = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns<? AND r.quality='good'"
            " ORDER BY r.ts_ns DESC, r.id DESC LIMIT 1",
            (self._series.get((meter_id, point), -1), ts_ns),
        ).fetchone()
        return _reading_from_row(row) if row else None

    def first_reading_ns(self, meter_id: str, point: str) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(ts_ns) FROM readings WHERE series=?",
            (self._series.get((meter_id, point), -1),),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # --- activity records --------------------------------------------------------------------

    def last_period_end_ns(self, meter_id: str, point: str) -> int | None:
        row = self.conn.execute(
            "SELECT MAX(period_end_ns) FROM activity_records WHERE meter_id=? AND point=?",
            (meter_id, point),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def insert_activity(self, records: Sequence[ActivityRecord], now_ns: int) -> None:
        """Insert records; call inside `transaction(store.conn)` with the outbox enqueue."""
        self.conn.executemany(
            "INSERT INTO activity_records (record_id, meter_id, point, period_start_ns,"
            " period_end_ns, revision, record_json, created_ns) VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    r.record_id,
                    r.meter_id,
                    r.point,
                    datetime_to_ns(r.period_start),
                    datetime_to_ns(r.period_end),
                    r.revision,
                    r.model_dump_json(),
                    now_ns,
                )
                for r in records
            ],
        )
