"""The store's SQLite file: its tables, their version and the migrations that bring an older
file forward in place, and how the file is opened (`connect`) and written (`transaction`),
and on which thread (`RunInDb`).

Durability policy: WAL journal with `synchronous=FULL`, so a transaction is on disk (fsynced)
when `commit` returns and survives `kill -9` and power loss. Never rewrites a file it does
not understand: a version it cannot bring forward is left as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

SCHEMA_VERSION = 6  # PRAGMA user_version; 1 keyed points by quantity, 2 by point name, 3 by
#                     series, 4 records know their outbox batch, 5 interpolated boundaries,
#                     revisions and allocation in the records, named reading cursors,
#                     6 readings keep a server timestamp and a label's text
MIGRATIONS = {  # from version: the statements that make it the next one, in place
    5: (
        "ALTER TABLE readings ADD COLUMN server_ts_ns INTEGER",
        "ALTER TABLE readings ADD COLUMN text TEXT",
    ),
}

# one statement each (executescript would COMMIT in the middle of our transaction)
SCHEMA_STATEMENTS = (
    """
CREATE TABLE IF NOT EXISTS cursors (  -- how far a reader of new readings got: the InfluxDB
                                     -- mirror, the aggregator's check for late readings
    name             TEXT PRIMARY KEY,
    last_reading_id  INTEGER NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS set_aside (  -- readings kept as evidence but not aggregated
    reading_id   INTEGER PRIMARY KEY,
    reason       TEXT    NOT NULL,
    at_ns        INTEGER NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS series (
    id           INTEGER PRIMARY KEY,  -- one point of one meter
    meter_id     TEXT    NOT NULL,
    point        TEXT    NOT NULL,
    quantity     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    unit         TEXT    NOT NULL,
    evicted_before INTEGER NOT NULL DEFAULT 0,  -- readings before this may have been deleted
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
    reason       TEXT,
    server_ts_ns INTEGER,          -- when an OPC UA server last saw the value
    text         TEXT              -- a label point's text, NULL for numbers and when bad
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
    batch_id     TEXT    NOT NULL,  -- the outbox batch (cloud_sync) that carries it
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
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (SQLite may have rolled back
    already, e.g. after SQLITE_FULL: the original error is raised, not ROLLBACK's)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:  # e.g. the disk filled while committing
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is still open; a failure here must not hide the error that led here."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def create_schema(conn: sqlite3.Connection) -> int | None:
    """Create the tables of a new file, or bring an older one forward (MIGRATIONS), in one
    transaction. Returns None when the file now holds SCHEMA_VERSION, else the version it
    holds, which this tanji cannot use (the file is then left as it was)."""
    with transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        empty = not conn.execute("SELECT 1 FROM sqlite_master WHERE name='readings'").fetchone()
        if not empty:  # older versions we can bring forward in place
            while version in MIGRATIONS:
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                version += 1
        if not empty and version != SCHEMA_VERSION:
            return version
        for statement in SCHEMA_STATEMENTS:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return None


def version_problem(version: int) -> str:
    """Why a file of schema `version` (not SCHEMA_VERSION) cannot be used, and what to do."""
    return f"store schema version {version}, this tanji needs {SCHEMA_VERSION}" + (
        " (the file is from a newer tanji: run that one)"
        if version > SCHEMA_VERSION
        else f" and can bring forward versions {min(MIGRATIONS)} and up only"
        "; move the old file aside (it is not modified) and start with a new one"
    )


class RunInDb(Protocol):
    """Runs a store call on the thread that owns the store (the gateway's DB thread): a
    connection is used by the thread that opened it only."""

    def __call__(self, fn: Callable[[], T], /) -> Awaitable[T]: ...
