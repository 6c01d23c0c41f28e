"""The platform simulator's database: validates every batch against the contract (JSON Schema +
content-derived batch id), stores accepted records in SQLite or PostgreSQL, recognises re-sent
batches as duplicates (a unique constraint on the batch id) and says what to ack. It knows
where a batch came from by its address (`{prefix}/{uscc}/{gateway_id}/{activity|readings}`,
the MQTT topic or the HTTPS path), never by the transport: both bindings share these rules.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import sqlite3
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import Any

import psycopg

from cloud_sync import Ack, AckStatus, ContractError, parse_batch, parse_readings_batch
from gateway.errors import TanjiFailure

# the platform adds quantities exactly, by its own rule, as an independent receiver would: 200
# digits are more than any sum of decimal quantities of ~30 digits needs
EXACT = Context(prec=200)

TABLES = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id    TEXT PRIMARY KEY,   -- a re-sent batch collides here: duplicate
    uscc        TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    received_ns BIGINT NOT NULL,
    received_by TEXT NOT NULL,          -- which simulator instance stored it
    payload     TEXT NOT NULL
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
    supersedes   TEXT,
    record_json  TEXT NOT NULL,
    UNIQUE (uscc, gateway_id, meter_id, point, period_start, revision)
);
CREATE INDEX IF NOT EXISTS records_by_period ON records (uscc, gateway_id, period_start);
CREATE TABLE IF NOT EXISTS reading_batches (
    batch_id    TEXT PRIMARY KEY,
    uscc        TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    received_ns BIGINT NOT NULL,
    received_by TEXT NOT NULL,
    count       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS readings (
    uscc        TEXT NOT NULL,
    gateway_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,      -- the gateway's reading number
    meter_id    TEXT NOT NULL,
    point       TEXT NOT NULL,
    quantity    TEXT NOT NULL,
    unit        TEXT NOT NULL,
    ts_ns       BIGINT NOT NULL,
    source_ts_ns BIGINT,
    value       TEXT,
    quality     TEXT NOT NULL,
    reason      TEXT,
    raw         TEXT NOT NULL,
    batch_id    TEXT NOT NULL REFERENCES reading_batches(batch_id),
    kind        TEXT,                 -- readings batch 2 on: counter, gauge or label
    server_ts_ns BIGINT,
    text        TEXT,                 -- a label's text (product code, production order)
    PRIMARY KEY (uscc, gateway_id, seq)
);
CREATE TABLE IF NOT EXISTS rejections (
    id          {serial} PRIMARY KEY,
    topic       TEXT NOT NULL,
    received_ns BIGINT NOT NULL,
    reason      TEXT NOT NULL
)
"""

ADDED_COLUMNS = (  # (table, column, type) added since the first release of these tables
    ("readings", "kind", "TEXT"),
    ("readings", "server_ts_ns", "BIGINT"),
    ("readings", "text", "TEXT"),
)
SCHEMA_LOCK = 0x74616E6A69  # PostgreSQL advisory lock key ("tanji") held while creating tables
# content a database refuses (e.g. PostgreSQL takes no NUL in text): rejected with the reason;
# other database errors (connection lost, ...) are not the batch's fault: no ack, so the
# gateway sends it again
DATA_ERRORS = (sqlite3.DataError, sqlite3.IntegrityError, psycopg.DataError, psycopg.IntegrityError)
MAX_PAYLOAD = 64 * 1024 * 1024  # a decompressed batch larger than this is refused
GZIP_MAGIC = b"\x1f\x8b"


class Database:
    """One connection to SQLite (a path) or PostgreSQL (a `postgresql://` DSN); statements
    use `?` placeholders either way, transactions are explicit."""

    def __init__(self, target: Path | str) -> None:
        self.postgres = isinstance(target, str) and target.startswith(
            ("postgresql://", "postgres://")
        )
        if self.postgres:
            self._pg = psycopg.connect(str(target), autocommit=True)
            self._begin = "BEGIN"
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._sqlite.execute("PRAGMA synchronous=FULL")
            self._sqlite.execute("PRAGMA busy_timeout=30000")
            self._begin = "BEGIN IMMEDIATE"
        serial = "BIGSERIAL" if self.postgres else "INTEGER"
        with self.transaction():
            if self.postgres:  # instances starting together would race to create the tables
                self.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            for statement in TABLES.format(serial=serial).split(";"):
                self.execute(statement)
            for table, column, sql_type in ADDED_COLUMNS:  # a database made before they were
                if self.postgres:
                    self.execute(
                        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}"
                    )
                elif column not in {r[1] for r in self.execute(f"PRAGMA table_info({table})")}:
                    self.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """A cursor (DB-API: fetchone, fetchall, rowcount)."""
        if self.postgres:
            return self._pg.execute(sql.replace("?", "%s").encode(), params)
        return self._sqlite.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.postgres:
            with self._pg.cursor() as cur:
                cur.executemany(sql.replace("?", "%s").encode(), rows)
        else:
            self._sqlite.executemany(sql, rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute(self._begin)
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested transaction: undone alone when the block raises."""
        self.execute("SAVEPOINT batch")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK TO SAVEPOINT batch")
            self.execute("RELEASE SAVEPOINT batch")
            raise
        self.execute("RELEASE SAVEPOINT batch")

    def close(self) -> None:
        (self._pg if self.postgres else self._sqlite).close()


class Refused(TanjiFailure):
    """Raised inside a transaction to roll it back and ack with this verdict instead (a
    signal the store catches itself, not the user's input)."""

    def __init__(self, ack: Ack) -> None:
        self.ack = ack


class PlatformStore:
    """The platform simulator's database: a SQLite file, or PostgreSQL given a DSN. Several
    simulator instances may share one PostgreSQL database: unique constraints decide which
    of two concurrent copies of a batch is stored and which is a duplicate, and a
    transaction-level lock per gateway (taken in a fixed order) makes one instance's checks
    against what another is storing for the same gateway see a settled state. SQLite takes
    one writer at a time anyway."""

    def __init__(self, target: Path | str, instance: str = "platform") -> None:
        self.target = target
        self.db = Database(target)
        self.instance = instance

    def reopen(self) -> None:
        """A fresh connection (after the database server dropped the old one)."""
        with contextlib.suppress(Exception):
            self.db.close()
        self.db = Database(self.target)

    def receive(self, topic: str, payload: bytes) -> Ack | None:
        """Store a batch (activity or raw readings, by the topic) and say what to ack; None
        when not even a batch id can be told."""
        return self.receive_many([(topic, payload)])[0]

    def receive_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Ack | None]:
        """Several batches in one commit (group commit: one fsync for all); each is stored or
        refused on its own. Ack them only after this returns."""
        with self.db.transaction():
            if self.db.postgres:
                gateways = sorted({"/".join(t.rsplit("/", 3)[-3:-1]) for t, _ in messages})
                for gateway in gateways:  # in a fixed order: no deadlock between instances
                    self.db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (gateway,))
            return [self._receive(topic, payload) for topic, payload in messages]

    def _receive(self, topic: str, payload: bytes) -> Ack | None:
        kind = topic.rsplit("/", 1)[-1]
        try:
            payload = _decoded(payload)
            batch = (parse_readings_batch if kind == "readings" else parse_batch)(payload)
        except ContractError as exc:
            self.db.execute(
                "INSERT INTO rejections (topic, received_ns, reason) VALUES (?,?,?)",
                (topic, time.time_ns(), str(exc)),
            )
            bid = _batch_id_of(payload)
            return Ack(bid, AckStatus.REJECTED, _reason(str(exc))) if bid else None
        expected_topic_tail = f"/{batch['uscc']}/{batch['gateway_id']}/{kind}"
        if not topic.endswith(expected_topic_tail):
            reason = "topic or path does not match the batch"  # names another gateway
            return Ack(batch["batch_id"], AckStatus.REJECTED, reason)
        try:
            with self.db.savepoint():
                if kind == "readings":
                    self._store_readings(batch)
                else:
                    self._store(batch)
        except Refused as verdict:
            return verdict.ack
        except DATA_ERRORS as exc:  # valid by the contract, yet not storable here
            reason = f"the platform cannot store this batch: {exc}"
            return Ack(batch["batch_id"], AckStatus.REJECTED, _reason(reason))
        return Ack(batch["batch_id"], AckStatus.ACCEPTED)

    def _store_readings(self, batch: dict[str, Any]) -> None:
        bid, uscc, gw = str(batch["batch_id"]), batch["uscc"], batch["gateway_id"]
        readings = batch["readings"]
        inserted = self.db.execute(
            "INSERT INTO reading_batches VALUES (?,?,?,?,?,?) ON CONFLICT (batch_id) DO NOTHING",
            (bid, uscc, gw, time.time_ns(), self.instance, len(readings)),
        ).rowcount
        if inserted != 1:
            raise Refused(Ack(bid, AckStatus.DUPLICATE))
        seqs = [r["seq"] for r in readings]
        held = {
            int(seq): (str(ts), value, text)
            for seq, ts, value, text in self.db.execute(
                "SELECT seq, ts_ns, value, text FROM readings WHERE uscc=? AND gateway_id=?"
                " AND seq BETWEEN ? AND ?",
                (uscc, gw, min(seqs), max(seqs)),
            ).fetchall()
        }
        new = []
        for r in readings:
            content = (r["ts_ns"], r["value"], r["text"])
            if r["seq"] in held:
                if held[r["seq"]] != content:
                    raise Refused(
                        Ack(bid, AckStatus.REJECTED, f"reading {r['seq']} held with other content")
                    )
                continue
            held[r["seq"]] = content  # a number twice in one batch
            new.append(
                (uscc, gw, r["seq"], r["meter_id"], r["point"], r["quantity"], r["unit"],
                 int(r["ts_ns"]), _ns(r["source_ts_ns"]), r["value"], r["quality"], r["reason"],
                 r["raw"], bid, r["kind"], _ns(r["server_ts_ns"]), r["text"])
            )  # fmt: skip
        if new:
            self.db.executemany(
                "INSERT INTO readings (uscc, gateway_id, seq, meter_id, point, quantity, unit,"
                " ts_ns, source_ts_ns, value, quality, reason, raw, batch_id, kind, server_ts_ns,"
                " text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                new,
            )

    def _store(self, batch: dict[str, Any]) -> None:
        bid = str(batch["batch_id"])
        inserted = self.db.execute(
            "INSERT INTO batches VALUES (?,?,?,?,?,?) ON CONFLICT (batch_id) DO NOTHING",
            (
                bid,
                batch["uscc"],
                batch["gateway_id"],
                time.time_ns(),
                self.instance,
                json.dumps(batch),
            ),
        ).rowcount
        if inserted != 1:
            raise Refused(Ack(bid, AckStatus.DUPLICATE))
        records: list[dict[str, Any]] = batch["records"]
        held, periods = self._held_for(batch["uscc"], batch["gateway_id"], records)
        rows = []
        for r in records:
            text = json.dumps(r, sort_keys=True)
            if r["record_id"] in held:
                if held[r["record_id"]] != text:
                    raise Refused(
                        Ack(
                            bid,
                            AckStatus.REJECTED,
                            f"record {r['record_id']} already stored with other content;"
                            " send a new revision instead",
                        )
                    )
                continue
            revisions = periods[r["meter_id"], r["point"], r["period_start"]]
            conflict = _revision_conflict(r, revisions)
            if conflict is not None:
                raise Refused(
                    Ack(
                        bid,
                        AckStatus.REJECTED,
                        f"record {r['record_id']} (revision {r['revision']}) conflicts with"
                        f" the revisions held for its period: {conflict}",
                    )
                )
            revisions[r["revision"]] = (r["record_id"], r.get("supersedes"))
            held[r["record_id"]] = text  # a record twice in one batch is stored once
            rows.append(
                (r["record_id"], bid, r["uscc"], r["gateway_id"], r["meter_id"], r["point"],
                 r["period_start"], r["period_end"], r["quantity"], r["unit"], r["revision"],
                 r.get("supersedes"), text)
            )  # fmt: skip
        if rows:
            self.db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def _held_for(
        self, uscc: str, gateway_id: str, records: list[dict[str, Any]]
    ) -> tuple[
        dict[str, str], defaultdict[tuple[str, str, str], dict[int, tuple[str, str | None]]]
    ]:
        """What is already stored about a batch's records, in two queries: the records with
        their ids, and every revision held for their periods."""
        ids = [r["record_id"] for r in records]
        held = dict(
            self.db.execute(
                f"SELECT record_id, record_json FROM records WHERE record_id IN ({_marks(ids)})",
                ids,
            ).fetchall()
        )
        starts = sorted({r["period_start"] for r in records})
        periods: defaultdict[tuple[str, str, str], dict[int, tuple[str, str | None]]] = defaultdict(
            dict
        )
        for meter, point, start, revision, record_id, supersedes in self.db.execute(
            "SELECT meter_id, point, period_start, revision, record_id, supersedes FROM records"
            f" WHERE uscc = ? AND gateway_id = ? AND period_start IN ({_marks(starts)})",
            [uscc, gateway_id, *starts],
        ).fetchall():
            periods[meter, point, start][int(revision)] = (record_id, supersedes)
        return held, periods

    def totals(self) -> dict[tuple[str, str], Decimal]:
        """(meter_id, point) -> sum of the latest revision of each period's record."""
        out: dict[tuple[str, str], Decimal] = {}
        with localcontext(EXACT):  # float-derived quantities have ~30 digits: add them exactly
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
        rows = self.db.execute(
            f"SELECT record_json FROM records a{latest} ORDER BY period_start, meter_id, revision"
        )
        return [json.loads(r[0]) for r in rows]

    def counts(self) -> tuple[int, int]:
        """(batches, records) stored."""
        b = self.db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        r = self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return int(b), int(r)

    def readings(self) -> list[dict[str, Any]]:
        """Raw readings received, by gateway and number."""
        rows = self.db.execute(
            "SELECT gateway_id, seq, meter_id, point, kind, ts_ns, server_ts_ns, value, text,"
            " quality FROM readings ORDER BY gateway_id, seq"
        ).fetchall()
        keys = ("gateway_id", "seq", "meter_id", "point", "kind", "ts_ns", "server_ts_ns",
                "value", "text", "quality")  # fmt: skip
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def by_instance(self) -> dict[str, int]:
        """Batches stored by each simulator instance."""
        rows = self.db.execute("SELECT received_by, COUNT(*) FROM batches GROUP BY received_by")
        return {str(who): int(n) for who, n in rows.fetchall()}


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _revision_conflict(r: dict[str, Any], held: dict[int, tuple[str, str | None]]) -> str | None:
    """Why a record does not fit the revisions held for its period, or None. Revisions may
    arrive in any order (a re-send after an outage); each must name the one before it
    (`supersedes`) and be named by the one after it, where those are held."""
    before, after = held.get(r["revision"] - 1), held.get(r["revision"] + 1)
    if before is not None and before[0] != r["supersedes"]:
        return f"supersedes {r['supersedes']}, but revision {r['revision'] - 1} is {before[0]}"
    if after is not None and after[1] != r["record_id"]:
        return f"revision {r['revision'] + 1} supersedes {after[1]}, not this record"
    return None


def _decoded(payload: bytes) -> bytes:
    """The JSON text of a payload sent as is or gzip-compressed (told by gzip's magic bytes,
    which JSON text never starts with)."""
    if not payload.startswith(GZIP_MAGIC):
        return payload
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as f:
            text = f.read(MAX_PAYLOAD + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise ContractError(f"gzip payload cannot be decompressed: {exc}") from None
    if len(text) > MAX_PAYLOAD:
        raise ContractError(f"decompressed payload exceeds {MAX_PAYLOAD} bytes")
    return text


def _batch_id_of(payload: bytes) -> str | None:
    """The batch id of a refused message, when it has one an ack can carry."""
    try:
        bid = json.loads(payload).get("batch_id")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(bid, str) or not 0 < len(bid) <= 128:
        return None
    return bid if _reason(bid) == bid else None  # not a lone surrogate


def _reason(text: str) -> str:
    """A rejection's reason as an ack carries it: Unicode text (a lone surrogate from the
    refused message shown as '?'), at most 1000 characters."""
    return text.encode("utf-8", "replace").decode("utf-8")[:1000]


def _ns(text: str | None) -> int | None:
    return None if text is None else int(text)
