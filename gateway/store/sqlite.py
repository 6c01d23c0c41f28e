"""Durable SQLite store for readings and activity records (the gateway's source of truth).

Durability policy: WAL journal with `synchronous=FULL`, so a transaction is on disk (fsynced)
when `commit` returns and survives `kill -9` and power loss. Readings are written in batches
by a single writer; the outbox (cloud_sync) lives in the same file. Never holds readings in
memory beyond the caller's commit interval.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from pathlib import Path
from typing import Any

from gateway.errors import TanjiError
from gateway.models import (
    ActivityRecord,
    PointKind,
    Quality,
    QualityStatus,
    Quantity,
    Reading,
)
from gateway.periods import datetime_to_ns

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


_GOOD = Quality.good()


def _reading_from_row(row: tuple[Any, ...]) -> Reading:
    """A stored reading (validated when it was written; the enums and the decimal are parsed
    again, so a damaged row still fails loudly)."""
    (meter_id, point, quantity, kind, unit, ts_ns, source_ts_ns, raw, value, quality, reason,
     server_ts_ns, text) = row  # fmt: skip
    return Reading.trusted(
        str(meter_id),
        str(point),
        Quantity(quantity),
        PointKind(kind),
        str(unit),
        int(ts_ns),
        bytes(raw),
        Decimal(str(value)) if value is not None else None,
        _GOOD
        if quality == "good" and reason is None
        else Quality(status=QualityStatus(quality), reason=reason),
        int(source_ts_ns) if source_ts_ns is not None else None,
        int(server_ts_ns) if server_ts_ns is not None else None,
        str(text) if text is not None else None,
    )


_READING_COLUMNS = (
    "s.meter_id, s.point, s.quantity, s.kind, s.unit,"
    " r.ts_ns, r.source_ts_ns, r.raw, r.value, r.quality, r.reason, r.server_ts_ns, r.text"
)
_SELECT_READINGS = f"SELECT {_READING_COLUMNS} FROM readings r JOIN series s ON s.id = r.series"
_USABLE = "r.id NOT IN (SELECT reading_id FROM set_aside)"  # what aggregation may use


def _row(r: Reading, series: dict[tuple[str, str], int]) -> tuple[Any, ...]:
    """A readings row (the hot path of the writer: field values read straight from the
    model's __dict__, StrEnum members bound as their text)."""
    d = r.__dict__
    value, quality = d["value"], d["quality"]
    return (
        series[d["meter_id"], d["point"]],
        d["ts_ns"],
        d["source_ts_ns"],
        d["raw"],
        None if value is None else str(value),
        quality.status,
        quality.reason,
        d["server_ts_ns"],
        d["text"],
    )


@dataclass(frozen=True)
class Keep:
    """What eviction must leave, told by the layers that know why: of a counter, the last
    `counter_readings` good readings before a meter's horizon (aggregation judges a period's
    first steps by them), and the records of batches not in `settled_batches`, a query of the
    batch ids the platform settled (delivery keeps its outbox in this file)."""

    counter_readings: int
    settled_batches: str


@dataclass(frozen=True)
class EvictionResult:
    deleted: int
    used_bytes: int
    over_cap: bool  # nothing more could go: new readings are refused until the platform acks


ROW_BYTES = 100  # a stored reading besides its raw bytes: row, index entry, page slack
GROWTH_DECAY = 0.99  # per commit, how fast a large observed growth per reading is forgotten
EVICT_CHUNK = 5_000  # readings deleted per transaction when evicting, in store order

SeriesSpec = tuple[str, str, Quantity, PointKind, str]
"""meter id, point name, quantity, kind, unit"""


class StoreError(TanjiError):
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
                f"{path}: store schema version {version}, this tanji needs {SCHEMA_VERSION}"
                + (
                    " (the file is from a newer tanji: run that one)"
                    if version > SCHEMA_VERSION
                    else f" and can bring forward versions {min(MIGRATIONS)} and up only"
                    "; move the old file aside (it is not modified) and start with a new one"
                )
            )
        self._growth = 0.0  # bytes one reading recently added to the database at most
        self._page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        self._wal_autocheckpoint = int(self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        # the series table in memory: ids for the writer's hot path, what each one measures
        self._series: dict[tuple[str, str], int] = {}
        self._measures: dict[tuple[str, str], tuple[str, str, str]] = {}
        rows = self.conn.execute("SELECT id, meter_id, point, quantity, kind, unit FROM series")
        for i, m, p, quantity, kind, unit in rows:
            self._series[m, p] = i
            self._measures[m, p] = (quantity, kind, unit)

    def _create_schema(self) -> tuple[bool, int]:
        with transaction(self.conn):
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            empty = not self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name='readings'"
            ).fetchone()
            if not empty:  # older versions we can bring forward in place
                while version in MIGRATIONS:
                    for statement in MIGRATIONS[version]:
                        self.conn.execute(statement)
                    version += 1
            usable = empty or version == SCHEMA_VERSION
            if usable:
                for statement in SCHEMA_STATEMENTS:
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return usable, int(version)

    def close(self) -> None:
        self.conn.close()

    def register_series(self, points: Iterable[SeriesSpec]) -> None:
        """Declare points (meter id, point name, quantity, kind, unit) before their readings
        arrive; the new ones are added in one transaction. A point name keeps its quantity,
        kind and unit for the life of the store: StoreError says when the configuration
        changed one of them (the point then needs a new name)."""
        new: dict[tuple[str, str], tuple[str, str, str]] = {}
        for meter_id, point, quantity, kind, unit in points:
            wanted = (quantity.value, kind.value, unit)
            stored = self._measures.get((meter_id, point)) or new.get((meter_id, point))
            if stored is None:
                new[meter_id, point] = wanted
            elif stored != wanted:
                raise StoreError(
                    f"{self.path}: point {point!r} of meter {meter_id!r} holds readings of"
                    f" {'/'.join(stored)}, the configuration now says {'/'.join(wanted)};"
                    " give the changed point a new name"
                )
        if not new:
            return
        try:
            with transaction(self.conn):
                for (meter_id, point), measures in new.items():
                    cur = self.conn.execute(
                        "INSERT INTO series (meter_id, point, quantity, kind, unit)"
                        " VALUES (?,?,?,?,?)",
                        (meter_id, point, *measures),
                    )
                    self._series[meter_id, point] = int(cur.lastrowid or 0)
        except sqlite3.Error as exc:  # e.g. another process holds the database locked
            for key in new:
                self._series.pop(key, None)
            raise StoreError(f"{self.path}: cannot register points: {exc}") from None
        self._measures.update(new)

    # --- readings ----------------------------------------------------------------------------

    def append_readings(self, readings: Sequence[Reading]) -> None:
        """Commit a batch of readings durably (one fsynced transaction). The gateway registers
        its points at start-up; a point seen here first is registered on the way."""
        if not readings:
            return
        try:
            self._insert_readings(readings)
        except KeyError:  # an unregistered point: the transaction was rolled back
            self.register_series(
                (r.meter_id, r.point, r.quantity, r.kind, r.unit) for r in readings
            )
            self._insert_readings(readings)

    def expected_growth(self, readings: Sequence[Reading]) -> int:
        """Bytes that committing `readings` may add to the database's pages in use: their
        raw bytes plus ROW_BYTES each, or what a reading recently took, whichever is more.
        Pure: safe to call from any thread."""
        size = sum(len(r.raw) for r in readings) + ROW_BYTES * len(readings)
        return max(size, int(self._growth * len(readings)))

    def room_needed(self, readings: Sequence[Reading]) -> int:
        """Bytes that must be left under the cap before committing `readings`: their
        expected growth, and what the WAL file may still grow: SQLite checkpoints it after
        the commit that takes it past `wal_autocheckpoint` pages, and that commit writes a
        frame per page it changes (an index page per point, the new rows' pages)."""
        data = self.expected_growth(readings)
        series = len({(r.meter_id, r.point) for r in readings})
        # the commit's frames, doubled: interior, freelist and other writers' pages too
        frames = self._wal_autocheckpoint + 2 * (series + data // self._page_size + 1) + 64
        return data + max(0, frames * (self._page_size + 24) - self._wal_bytes())

    def append_within(self, readings: Sequence[Reading], cap_bytes: int) -> bool:
        """Commit `readings` (append_readings) unless that could take the store (file and
        WAL) over `cap_bytes` (room_needed): then nothing is written and the answer is
        False. Costs a few PRAGMAs and a stat, so the cap holds at every commit."""
        if not readings:
            return True
        data = self._data_bytes()
        if data + self._wal_bytes() + self.room_needed(readings) > cap_bytes:
            return False
        self.append_readings(readings)
        grown = (self._data_bytes() - data) / len(readings)
        self._growth = max(grown, self._growth * GROWTH_DECAY)
        return True

    def _insert_readings(self, readings: Sequence[Reading]) -> None:
        series = self._series
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT INTO readings (series, ts_ns, source_ts_ns, raw, value, quality, reason,"
                " server_ts_ns, text) VALUES (?,?,?,?,?,?,?,?,?)",
                map(_row, readings, repeat(series)),
            )

    def readings(self, meter_id: str, point: str, start_ns: int, end_ns: int) -> list[Reading]:
        """Readings of one point with start_ns <= ts < end_ns, oldest first."""
        rows = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns>=? AND r.ts_ns<? AND {_USABLE}"
            " ORDER BY r.ts_ns, r.id",
            (self._series.get((meter_id, point), -1), start_ns, end_ns),
        ).fetchall()
        return [_reading_from_row(r) for r in rows]

    def readings_after(self, reading_id: int, limit: int) -> list[tuple[int, Reading]]:
        """The next `limit` readings in store order after row `reading_id`, with their ids."""
        rows = self.conn.execute(
            f"SELECT r.id, {_READING_COLUMNS} FROM readings r JOIN series s ON s.id = r.series"
            " WHERE r.id > ? ORDER BY r.id LIMIT ?",
            (reading_id, limit),
        ).fetchall()
        return [(int(row[0]), _reading_from_row(row[1:])) for row in rows]

    def cursor(self, name: str) -> int | None:
        """Id of the last reading the reader `name` has dealt with; None before its first."""
        row = self.conn.execute(
            "SELECT last_reading_id FROM cursors WHERE name = ?", (name,)
        ).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, name: str, reading_id: int) -> None:
        """Move a reader's cursor (inside the caller's transaction, with what it wrote)."""
        self.conn.execute(
            "INSERT INTO cursors (name, last_reading_id) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET last_reading_id = excluded.last_reading_id",
            (name, reading_id),
        )

    def last_reading_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0])

    def earliest_new(self, after_id: int, up_to_id: int) -> dict[tuple[str, str], int]:
        """(meter, point) -> earliest timestamp among readings stored in (after_id, up_to_id]."""
        rows = self.conn.execute(
            "SELECT s.meter_id, s.point, MIN(r.ts_ns) FROM readings r"
            f" JOIN series s ON s.id = r.series WHERE r.id > ? AND r.id <= ? AND {_USABLE}"
            " GROUP BY r.series",
            (after_id, up_to_id),
        )
        return {(str(m), str(p)): int(ts) for m, p, ts in rows}

    def evicted_before(self, meter_id: str, point: str) -> int:
        """Readings of the point before this time may have been evicted (0: none were)."""
        row = self.conn.execute(
            "SELECT evicted_before FROM series WHERE id = ?",
            (self._series.get((meter_id, point), -1),),
        ).fetchone()
        return int(row[0]) if row else 0

    def last_at(self, meter_id: str, point: str, ts_ns: int) -> Reading | None:
        """The point's last reading (any quality) at or before ts_ns."""
        row = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns<=? ORDER BY r.ts_ns DESC, r.id DESC"
            " LIMIT 1",
            (self._series.get((meter_id, point), -1), ts_ns),
        ).fetchone()
        return _reading_from_row(row) if row else None

    def good_before(self, meter_id: str, point: str, ts_ns: int, limit: int) -> list[Reading]:
        """The last `limit` good readings before ts_ns that aggregation may use, oldest first."""
        rows = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns<? AND r.quality='good'"
            f" AND {_USABLE} ORDER BY r.ts_ns DESC, r.id DESC LIMIT ?",
            (self._series.get((meter_id, point), -1), ts_ns, limit),
        ).fetchall()
        return [_reading_from_row(r) for r in reversed(rows)]

    def good_from(
        self, meter_id: str, point: str, ts_ns: int, limit: int, up_to_id: int | None = None
    ) -> list[Reading]:
        """The first `limit` good readings at or after ts_ns that aggregation may use; with
        `up_to_id`, among the readings stored up to that row only."""
        stored = "" if up_to_id is None else f" AND r.id <= {int(up_to_id)}"
        rows = self.conn.execute(
            f"{_SELECT_READINGS} WHERE r.series=? AND r.ts_ns>=? AND r.quality='good'"
            f" AND {_USABLE}{stored} ORDER BY r.ts_ns, r.id LIMIT ?",
            (self._series.get((meter_id, point), -1), ts_ns, limit),
        ).fetchall()
        return [_reading_from_row(r) for r in rows]

    def first_reading_ns(self, meter_id: str, point: str) -> int | None:
        row = self.conn.execute(
            "SELECT MIN(ts_ns) FROM readings WHERE series=?",
            (self._series.get((meter_id, point), -1),),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def set_aside(
        self, meter_id: str, point: str, after_id: int, up_to_id: int, before_ns: int, reason: str
    ) -> int:
        """Exclude from aggregation the point's readings stored in (after_id, up_to_id] with
        timestamps before `before_ns` (they stay stored as evidence); returns how many."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO set_aside (reading_id, reason, at_ns) SELECT id, ?, ? FROM"
            " readings WHERE series=? AND id>? AND id<=? AND ts_ns<?",
            (
                reason,
                before_ns,
                self._series.get((meter_id, point), -1),
                after_id,
                up_to_id,
                before_ns,
            ),
        )
        return cur.rowcount

    # --- activity records --------------------------------------------------------------------

    def last_period_end_ns(self, meter_id: str, point: str) -> int | None:
        row = self.conn.execute(
            "SELECT MAX(period_end_ns) FROM activity_records WHERE meter_id=? AND point=?",
            (meter_id, point),
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def insert_activity(
        self, records: Sequence[ActivityRecord], now_ns: int, batch_ids: Sequence[str]
    ) -> None:
        """Insert records with the outbox batch of each; call inside `transaction(store.conn)`
        with the outbox enqueue."""
        self.conn.executemany(
            "INSERT INTO activity_records (record_id, meter_id, point, period_start_ns,"
            " period_end_ns, revision, record_json, created_ns, batch_id)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
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
                    batch_id,
                )
                for r, batch_id in zip(records, batch_ids, strict=True)
            ],
        )

    def sealed_after(self, meter_id: str, point: str, ts_ns: int) -> list[ActivityRecord]:
        """The latest revision of each sealed period of one point that ends after ts_ns,
        oldest first."""
        rows = self.conn.execute(
            "SELECT record_json FROM activity_records a WHERE meter_id=? AND point=? AND"
            " period_end_ns>? AND revision = (SELECT MAX(revision) FROM activity_records b"
            " WHERE b.meter_id=a.meter_id AND b.point=a.point AND"
            " b.period_start_ns=a.period_start_ns) ORDER BY period_start_ns",
            (meter_id, point, ts_ns),
        )
        return [ActivityRecord.model_validate_json(text) for (text,) in rows]

    def activity_records(self, start_ns: int, end_ns: int) -> list[ActivityRecord]:
        """Every revision of the records of periods starting in [start_ns, end_ns)."""
        rows = self.conn.execute(
            "SELECT record_json FROM activity_records"
            " WHERE period_start_ns >= ? AND period_start_ns < ? ORDER BY period_start_ns",
            (start_ns, end_ns),
        ).fetchall()
        return [ActivityRecord.model_validate_json(r[0]) for r in rows]

    # --- retention and the disk cap ------------------------------------------------------------

    def used_bytes(self) -> int:
        """Pages in use (free pages are reused before the file grows) plus the WAL."""
        return self._data_bytes() + self._wal_bytes()

    def _data_bytes(self) -> int:
        page_size, pages, free = (
            self.conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "page_count", "freelist_count")
        )
        return int((pages - free) * page_size)

    def _wal_bytes(self) -> int:
        try:
            return self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return 0

    def evictable_before(
        self, sealed_ns: int, *, keep: Keep, unsent_from_id: int | None = None
    ) -> dict[int, int]:
        """Per series: readings older than this may go. A meter's readings are done with once
        the platform has settled every activity record of theirs (acknowledged, or rejected:
        a rejected record is kept and needs attention, but must not hold the disk forever):
        the horizon is the start of its oldest unsettled record, else the end of its last.
        A counter without records yet keeps everything (its first period is not sealed); a
        gauge of a meter without records is done with at `sealed_ns`. The last good reading
        before the horizon stays, and of a counter the last `keep.counter_readings`: they
        open the next period (the last one its first value, all of them what is a glitch
        there: gateway/activity/counters.py). With
        `unsent_from_id` (the raw readings stream's cursor), no reading after it goes either:
        the platform wants it."""
        settled = self.conn.execute(
            "SELECT a.meter_id, MAX(a.period_end_ns), MIN(CASE WHEN a.batch_id IN"
            f" ({keep.settled_batches}) THEN NULL ELSE a.period_start_ns END)"
            " FROM activity_records a GROUP BY a.meter_id"
        ).fetchall()
        horizon = {m: (open_ if open_ is not None else end) for m, end, open_ in settled}
        counters = {i for (i,) in self.conn.execute("SELECT id FROM series WHERE kind = 'counter'")}
        out: dict[int, int] = {}
        for (meter_id, _point), series in self._series.items():
            h = horizon.get(meter_id)
            if h is None:
                h = 0 if series in counters else sealed_ns
            row = self.conn.execute(
                "SELECT ts_ns FROM readings WHERE series=? AND ts_ns<? AND quality='good'"
                " ORDER BY ts_ns DESC LIMIT 1 OFFSET ?",
                (series, h, keep.counter_readings - 1 if series in counters else 0),
            ).fetchone()
            out[series] = min(h, row[0]) if row and row[0] is not None else h
            if unsent_from_id is not None:
                (first_unsent,) = self.conn.execute(
                    "SELECT MIN(ts_ns) FROM readings WHERE id > ? AND series = ?",
                    (unsent_from_id, series),
                ).fetchone()
                if first_unsent is not None:
                    out[series] = min(out[series], int(first_unsent))
        return out

    def _truncate_wal(self) -> None:
        """Copy the WAL into the file and empty it (waits for readers, briefly: theirs are
        short; when they keep it, the WAL just stays as it is)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def evict(self, older_than_ns: int, horizons: dict[int, int]) -> int:
        """Delete readings older than `older_than_ns` that are done with (`horizons`, from
        evictable_before); returns how many went.

        Every page a transaction touches is written to the WAL first, so the deletes go in
        store order (rows are appended in about time order, the points of a poll cycle side
        by side), EVICT_CHUNK rows per transaction with the WAL emptied in between: deleting
        point by point would touch every page once per point, and one large delete would
        grow the WAL (and the disk) by about what it deletes, while the store is at its cap.
        Older readings stored later (a backfill) are deleted point by point at the end."""
        limits = {
            s: min(h, older_than_ns) for s, h in horizons.items() if min(h, older_than_ns) > 0
        }
        if not limits:
            return 0
        newest = max(limits.values())
        deleted, after = 0, 0
        while True:
            rows = self.conn.execute(
                "SELECT id, series, ts_ns FROM readings WHERE id > ? ORDER BY id LIMIT ?",
                (after, EVICT_CHUNK),
            ).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            doomed = [(i, series) for i, series, ts in rows if ts < limits.get(series, 0)]
            if doomed:
                with transaction(self.conn):
                    self.conn.executemany(
                        "DELETE FROM readings WHERE id = ?", ((i,) for i, _ in doomed)
                    )
                    self._mark_evicted({series for _, series in doomed}, limits)
                deleted += len(doomed)
                self._truncate_wal()
            if min(ts for _, _, ts in rows) >= newest:
                break  # past every limit
        with transaction(self.conn):  # what a backfill stored after the rows seen above
            late = set()
            for series, limit in limits.items():
                n = self.conn.execute(
                    "DELETE FROM readings WHERE series=? AND ts_ns<?", (series, limit)
                ).rowcount
                if n:
                    deleted += n
                    late.add(series)
            self._mark_evicted(late, limits)
        return deleted

    def _mark_evicted(self, series: set[int], limits: dict[int, int]) -> None:
        self.conn.executemany(
            "UPDATE series SET evicted_before = MAX(evicted_before, ?) WHERE id = ?",
            ((limits[s], s) for s in series),
        )

    def enforce_limits(
        self,
        now_ns: int,
        sealed_ns: int,
        retention_ns: int,
        cap_bytes: int | None,
        *,
        keep: Keep,
        unsent_from_id: int | None = None,
        room_bytes: int = 0,
    ) -> EvictionResult:
        """Retention, then the disk cap (see docs/architecture.md, eviction order): readings
        past retention go; over the cap (or with less than `room_bytes` left under it), the
        oldest evictable readings go, in doubling steps of time, until use is under 90 % of
        the cap (less `room_bytes`) or nothing evictable is left; `over_cap` then says
        whether `room_bytes` still do not fit. Readings after `unsent_from_id` (not yet
        acked on the raw readings stream) stay."""
        horizons = self.evictable_before(sealed_ns, keep=keep, unsent_from_id=unsent_from_id)
        deleted = self.evict(now_ns - retention_ns, horizons)
        used = self.used_bytes()
        if cap_bytes is not None and used + room_bytes > cap_bytes:
            self._truncate_wal()  # the deletes below start from an empty WAL
            # rows are appended in time order, so the first row is (about) the oldest; this
            # avoids a scan of the whole table, which has no index on time alone
            row = self.conn.execute("SELECT ts_ns FROM readings ORDER BY id LIMIT 1").fetchone()
            cutoff = int(row[0]) if row and row[0] is not None else now_ns
            last = max(horizons.values(), default=0)
            step = 3600 * 10**9
            while used + room_bytes > 0.9 * cap_bytes and cutoff < last:
                cutoff += step
                step *= 2
                deleted += self.evict(cutoff, horizons)
                self._truncate_wal()
                used = self.used_bytes()
        return EvictionResult(
            deleted, used, cap_bytes is not None and used + room_bytes > cap_bytes
        )
