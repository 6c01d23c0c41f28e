"""What may leave the store, and when: the disk the store takes (pages in use plus the WAL),
retention and the disk cap (docs/architecture.md, eviction order). Deletes raw readings only,
never activity records, the outbox or what `Keep` says to keep.

Functions over the store's connection rather than methods of `Store` (which keeps one-line
delegates as its public face): eviction is a policy with its own rules and tests, it needs
no state of the store's beyond the connection, the file's path and the series ids, and
taking those as arguments keeps what it reads in plain sight (a mixin would reach into the
store's attributes unseen).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.store.schema import transaction

EVICT_CHUNK = 5_000  # readings deleted per transaction when evicting, in store order


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


def data_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (free pages are reused before the file grows)."""
    page_size, pages, free = (
        conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("page_size", "page_count", "freelist_count")
    )
    return int((pages - free) * page_size)


def wal_bytes(path: Path) -> int:
    """Size of the database's WAL file (0 when there is none)."""
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def used_bytes(conn: sqlite3.Connection, path: Path) -> int:
    """Pages in use plus the WAL: what the disk cap is compared with."""
    return data_bytes(conn) + wal_bytes(path)


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the file and empty it (waits for readers, briefly: theirs are
    short; when they keep it, the WAL just stays as it is)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def evictable_before(
    conn: sqlite3.Connection,
    series_ids: Mapping[tuple[str, str], int],
    sealed_ns: int,
    *,
    keep: Keep,
    unsent_from_id: int | None = None,
) -> dict[int, int]:
    """Per series (`series_ids`: (meter, point) -> series id): readings older than this may
    go. A meter's readings are done with once the platform has settled every activity record
    of theirs (acknowledged, or rejected: a rejected record is kept and needs attention, but
    must not hold the disk forever): the horizon is the start of its oldest unsettled record,
    else the end of its last. A counter without records yet keeps everything (its first
    period is not sealed); a gauge of a meter without records is done with at `sealed_ns`.
    The last good reading before the horizon stays, and of a counter the last
    `keep.counter_readings`: they open the next period (the last one its first value, all of
    them what is a glitch there: gateway/activity/counters.py). With `unsent_from_id` (the
    raw readings stream's cursor), no reading after it goes either: the platform wants it."""
    settled = conn.execute(
        "SELECT a.meter_id, MAX(a.period_end_ns), MIN(CASE WHEN a.batch_id IN"
        f" ({keep.settled_batches}) THEN NULL ELSE a.period_start_ns END)"
        " FROM activity_records a GROUP BY a.meter_id"
    ).fetchall()
    horizon = {m: (open_ if open_ is not None else end) for m, end, open_ in settled}
    counters = {i for (i,) in conn.execute("SELECT id FROM series WHERE kind = 'counter'")}
    out: dict[int, int] = {}
    for (meter_id, _point), series in series_ids.items():
        h = horizon.get(meter_id)
        if h is None:
            h = 0 if series in counters else sealed_ns
        row = conn.execute(
            "SELECT ts_ns FROM readings WHERE series=? AND ts_ns<? AND quality='good'"
            " ORDER BY ts_ns DESC LIMIT 1 OFFSET ?",
            (series, h, keep.counter_readings - 1 if series in counters else 0),
        ).fetchone()
        out[series] = min(h, row[0]) if row and row[0] is not None else h
        if unsent_from_id is not None:
            (first_unsent,) = conn.execute(
                "SELECT MIN(ts_ns) FROM readings WHERE id > ? AND series = ?",
                (unsent_from_id, series),
            ).fetchone()
            if first_unsent is not None:
                out[series] = min(out[series], int(first_unsent))
    return out


def evict(conn: sqlite3.Connection, older_than_ns: int, horizons: dict[int, int]) -> int:
    """Delete readings older than `older_than_ns` that are done with (`horizons`, from
    evictable_before); returns how many went.

    Every page a transaction touches is written to the WAL first, so the deletes go in
    store order (rows are appended in about time order, the points of a poll cycle side
    by side), EVICT_CHUNK rows per transaction with the WAL emptied in between: deleting
    point by point would touch every page once per point, and one large delete would
    grow the WAL (and the disk) by about what it deletes, while the store is at its cap.
    Older readings stored later (a backfill) are deleted point by point at the end."""
    limits = {s: min(h, older_than_ns) for s, h in horizons.items() if min(h, older_than_ns) > 0}
    if not limits:
        return 0
    newest = max(limits.values())
    deleted, after = 0, 0
    while True:
        rows = conn.execute(
            "SELECT id, series, ts_ns FROM readings WHERE id > ? ORDER BY id LIMIT ?",
            (after, EVICT_CHUNK),
        ).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        doomed = [(i, series) for i, series, ts in rows if ts < limits.get(series, 0)]
        if doomed:
            with transaction(conn):
                conn.executemany("DELETE FROM readings WHERE id = ?", ((i,) for i, _ in doomed))
                _mark_evicted(conn, {series for _, series in doomed}, limits)
            deleted += len(doomed)
            truncate_wal(conn)
        if min(ts for _, _, ts in rows) >= newest:
            break  # past every limit
    with transaction(conn):  # what a backfill stored after the rows seen above
        late = set()
        for series, limit in limits.items():
            n = conn.execute(
                "DELETE FROM readings WHERE series=? AND ts_ns<?", (series, limit)
            ).rowcount
            if n:
                deleted += n
                late.add(series)
        _mark_evicted(conn, late, limits)
    return deleted


def _mark_evicted(conn: sqlite3.Connection, series: set[int], limits: dict[int, int]) -> None:
    conn.executemany(
        "UPDATE series SET evicted_before = MAX(evicted_before, ?) WHERE id = ?",
        ((limits[s], s) for s in series),
    )


def enforce_limits(
    conn: sqlite3.Connection,
    path: Path,
    series_ids: Mapping[tuple[str, str], int],
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
    horizons = evictable_before(
        conn, series_ids, sealed_ns, keep=keep, unsent_from_id=unsent_from_id
    )
    deleted = evict(conn, now_ns - retention_ns, horizons)
    used = used_bytes(conn, path)
    if cap_bytes is not None and used + room_bytes > cap_bytes:
        truncate_wal(conn)  # the deletes below start from an empty WAL
        # rows are appended in time order, so the first row is (about) the oldest; this
        # avoids a scan of the whole table, which has no index on time alone
        row = conn.execute("SELECT ts_ns FROM readings ORDER BY id LIMIT 1").fetchone()
        cutoff = int(row[0]) if row and row[0] is not None else now_ns
        last = max(horizons.values(), default=0)
        step = 3600 * 10**9
        while used + room_bytes > 0.9 * cap_bytes and cutoff < last:
            cutoff += step
            step *= 2
            deleted += evict(conn, cutoff, horizons)
            truncate_wal(conn)
            used = used_bytes(conn, path)
    return EvictionResult(deleted, used, cap_bytes is not None and used + room_bytes > cap_bytes)
