"""Durable SQLite store for readings and activity records (the gateway's source of truth).

The file, its schema and transactions are `gateway.store.schema`'s; what may be evicted is
`gateway.store.eviction`'s (Store delegates to it). Readings are written in batches by a
single writer; the outbox (cloud_sync) lives in the same file. Never holds readings in
memory beyond the caller's commit interval.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
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
from gateway.store import eviction
from gateway.store.eviction import EvictionResult, Keep, data_bytes, wal_bytes
from gateway.store.schema import connect, create_schema, transaction, version_problem

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


ROW_BYTES = 100  # a stored reading besides its raw bytes: row, index entry, page slack
GROWTH_DECAY = 0.99  # per commit, how fast a large observed growth per reading is forgotten
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
            unusable = create_schema(self.conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        if unusable is not None:
            self.conn.close()
            raise StoreError(f"{path}: {version_problem(unusable)}")
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
        return data + max(0, frames * (self._page_size + 24) - wal_bytes(self.path))

    def append_within(self, readings: Sequence[Reading], cap_bytes: int) -> bool:
        """Commit `readings` (append_readings) unless that could take the store (file and
        WAL) over `cap_bytes` (room_needed): then nothing is written and the answer is
        False. Costs a few PRAGMAs and a stat, so the cap holds at every commit."""
        if not readings:
            return True
        data = data_bytes(self.conn)
        if data + wal_bytes(self.path) + self.room_needed(readings) > cap_bytes:
            return False
        self.append_readings(readings)
        grown = (data_bytes(self.conn) - data) / len(readings)
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
        return eviction.used_bytes(self.conn, self.path)

    def evictable_before(
        self, sealed_ns: int, *, keep: Keep, unsent_from_id: int | None = None
    ) -> dict[int, int]:
        """Per series: readings older than this may go (gateway.store.eviction)."""
        return eviction.evictable_before(
            self.conn, self._series, sealed_ns, keep=keep, unsent_from_id=unsent_from_id
        )

    def evict(self, older_than_ns: int, horizons: dict[int, int]) -> int:
        """Delete readings older than `older_than_ns` that are done with (`horizons`, from
        evictable_before); returns how many went (gateway.store.eviction)."""
        return eviction.evict(self.conn, older_than_ns, horizons)

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
        """Retention, then the disk cap, in the documented eviction order
        (gateway.store.eviction.enforce_limits)."""
        return eviction.enforce_limits(
            self.conn,
            self.path,
            self._series,
            now_ns,
            sealed_ns,
            retention_ns,
            cap_bytes,
            keep=keep,
            unsent_from_id=unsent_from_id,
            room_bytes=room_bytes,
        )
