"""The calibration registry: every certificate of every meter, in the gateway's store, as an
append-only log. Certificates are added, superseded (a corrected record replaces a wrong one)
or revoked with a reason; nothing is ever updated or deleted (SQLite triggers refuse it), so
the history an auditor sees is the history there was.

The site's own `[meters.calibration]` entries are registered at start (`sync_site`);
`tanji calibration import` adds certificates from files. gateway.metrology.status decides, from the
entries, the status of a meter at a time.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from gateway.errors import TanjiError
from gateway.metrology.status import Entry, status_on
from gateway.models import CalibrationRecord, CalibrationStatus, Frozen
from gateway.problems import ConfigError, ConfigProblem, problems_from
from gateway.store.schema import transaction

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS calibration_log (
    seq            INTEGER PRIMARY KEY,
    meter_id       TEXT    NOT NULL,
    action         TEXT    NOT NULL CHECK (action IN ('add', 'revoke')),
    certificate_no TEXT    NOT NULL,
    record_json    TEXT,             -- add: the certificate (CalibrationRecord)
    reason         TEXT,             -- revoke: why
    source         TEXT    NOT NULL, -- site.toml, a file with its SHA-256, the command line
    at_ns          INTEGER NOT NULL,
    CHECK ((action = 'add') = (record_json IS NOT NULL)),
    CHECK ((action = 'revoke') = (reason IS NOT NULL))
)
""",
    """
CREATE TRIGGER IF NOT EXISTS calibration_log_no_update BEFORE UPDATE ON calibration_log
BEGIN SELECT RAISE(ABORT, 'the calibration registry is append-only'); END
""",
    """
CREATE TRIGGER IF NOT EXISTS calibration_log_no_delete BEFORE DELETE ON calibration_log
BEGIN SELECT RAISE(ABORT, 'the calibration registry is append-only'); END
""",
)
SITE = "site.toml"
STANDARD = "std:"  # holder ids of reference standards (their certificates extend the chain)


class CalibrationError(TanjiError, ValueError):
    """A registry operation that would contradict what is registered."""


@dataclass(frozen=True)
class LogRow:
    seq: int
    meter_id: str
    action: str
    certificate_no: str
    record: CalibrationRecord | None
    reason: str | None
    source: str
    at_ns: int


@dataclass(frozen=True)
class MeterCalibration:
    """A meter's calibration status on a day and the certificate that decides it."""

    meter_id: str
    status: CalibrationStatus
    record: CalibrationRecord | None

    def days_left(self, day: date) -> int | None:
        return (self.record.due_date - day).days if self.record else None

    def due_within(self, day: date, days: int) -> bool:
        """Not valid on `day`, or due within `days` of it."""
        left = self.days_left(day)
        return self.status != "valid" or (left is not None and left <= days)


class Registry:
    """The registry on the gateway's store connection (one caller at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        with transaction(conn):
            for statement in SCHEMA:
                conn.execute(statement)

    # --- reading ---------------------------------------------------------------------------

    def log(self, meter_id: str | None = None) -> list[LogRow]:
        """The whole history (of one meter), oldest first."""
        where, args = ("WHERE meter_id = ?", (meter_id,)) if meter_id else ("", ())
        rows = self.conn.execute(
            "SELECT seq, meter_id, action, certificate_no, record_json, reason, source, at_ns"
            f" FROM calibration_log {where} ORDER BY seq",
            args,
        )
        return [
            LogRow(
                int(seq),
                str(m),
                str(action),
                str(cert),
                CalibrationRecord.model_validate_json(text) if text else None,
                reason,
                str(source),
                int(at),
            )
            for seq, m, action, cert, text, reason, source, at in rows
        ]

    def entries(self, meter_id: str) -> tuple[Entry, ...]:
        """Every certificate ever added for the meter, each with its revocation if any (a
        revocation applies to the latest addition of that certificate number before it)."""
        added: dict[str, Entry] = {}
        out: list[Entry] = []
        for row in self.log(meter_id):
            if row.action == "add" and row.record is not None:
                added[row.certificate_no] = Entry(row.seq, row.record)
                out.append(added[row.certificate_no])
            elif row.action == "revoke" and row.certificate_no in added:
                old = added.pop(row.certificate_no)
                out[out.index(old)] = Entry(old.seq, old.record, row.reason)
        return tuple(out)

    def find(self, certificate_no: str) -> tuple[str, tuple[Entry, ...]] | None:
        """Who holds a certificate (a meter, or a reference standard `std:…`), with all of
        that holder's entries; None when it was never registered."""
        row = self.conn.execute(
            "SELECT meter_id FROM calibration_log WHERE action = 'add' AND certificate_no = ?"
            " ORDER BY seq DESC LIMIT 1",
            (certificate_no,),
        ).fetchone()
        return (str(row[0]), self.entries(str(row[0]))) if row else None

    def standing(self, meter_id: str, certificate_no: str) -> Entry | None:
        """The certificate as registered and not revoked, if it is."""
        found = [
            e
            for e in self.entries(meter_id)
            if e.record.certificate_no == certificate_no and e.revoked is None
        ]
        return found[-1] if found else None

    def statuses(self, meter_ids: Iterable[str], day: date) -> list[MeterCalibration]:
        """Each meter's status on `day` and the certificate that decides it."""
        out = []
        for meter_id in meter_ids:
            status, entry = status_on(self.entries(meter_id), day)
            out.append(MeterCalibration(meter_id, status, entry.record if entry else None))
        return out

    # --- writing (each call one transaction) -----------------------------------------------

    def add(self, meter_id: str, record: CalibrationRecord, source: str, now_ns: int) -> bool:
        """Register a certificate; False when exactly this one is already registered."""
        with transaction(self.conn):
            return self._add(meter_id, record, source, now_ns)

    def revoke(
        self, meter_id: str, certificate_no: str, reason: str, source: str, now_ns: int
    ) -> None:
        with transaction(self.conn):
            self._revoke(meter_id, certificate_no, reason, source, now_ns)

    def supersede(
        self,
        meter_id: str,
        certificate_no: str,
        record: CalibrationRecord,
        reason: str,
        source: str,
        now_ns: int,
    ) -> None:
        """Replace a registered certificate by a corrected record (revoke + add, atomically)."""
        with transaction(self.conn):
            self._revoke(meter_id, certificate_no, f"superseded: {reason}", source, now_ns)
            self._add(meter_id, record, source, now_ns)

    def add_all(
        self, certificates: Iterable[tuple[str, CalibrationRecord]], source: str, now_ns: int
    ) -> int:
        """Register several certificates in one transaction (all or none); returns how many
        were new."""
        with transaction(self.conn):
            return sum(self._add(m, c, source, now_ns) for m, c in certificates)

    def register(
        self,
        certificates: Sequence[tuple[str, CalibrationRecord]],
        source: str,
        now_ns: int,
        supersedes: str | None = None,
        reason: str = "",
    ) -> int:
        """Register imported certificates (all or none), or with `supersedes` the one
        certificate in place of that registered one; returns how many were new."""
        if supersedes is None:
            return self.add_all(certificates, source, now_ns)
        if len(certificates) != 1:
            raise CalibrationError(f"superseding takes one certificate, not {len(certificates)}")
        meter_id, record = certificates[0]
        self.supersede(meter_id, supersedes, record, reason, source, now_ns)
        return 1

    def sync_site(self, meters: Iterable[tuple[str, CalibrationRecord]], now_ns: int) -> list[str]:
        """Register the site configuration's certificates, each decided and written in one
        transaction (a concurrent import cannot slip in between). A certificate whose entry in
        site.toml changed supersedes the one registered from site.toml; one that was revoked
        (or superseded) is not registered again while site.toml still says the same; one
        imported from a file is never overridden. Returns what was done or refused."""
        notes: list[str] = []
        for meter_id, record in meters:
            with transaction(self.conn):
                note = self._sync_one(meter_id, record, now_ns)
            if note:
                notes.append(note)
        return notes

    def _sync_one(self, meter_id: str, record: CalibrationRecord, now_ns: int) -> str | None:
        number = record.certificate_no
        current = self.standing(meter_id, number)
        if current is not None and current.record == record:
            return None
        if current is None:
            if self._was_revoked(meter_id, record):
                return None  # withdrawn on purpose: site.toml saying it again does not undo that
            self._add(meter_id, record, SITE, now_ns)
            return f"{meter_id}: registered {number} from site.toml"
        if self._was_revoked(meter_id, record):
            return (
                f"{meter_id}: {number} in site.toml is a version that was revoked; the"
                " registered one stands"
            )
        source = next(r.source for r in self.log(meter_id) if r.seq == current.seq)
        if source != SITE:
            return (
                f"{meter_id}: {number} in site.toml differs from the one registered from"
                f" {source}; the registered one stands (supersede it with"
                " `tanji calibration import --supersede`)"
            )
        self._revoke(meter_id, number, "superseded: changed in site.toml", SITE, now_ns)
        self._add(meter_id, record, SITE, now_ns)
        return f"{meter_id}: {number} changed in site.toml, superseded"

    def _was_revoked(self, meter_id: str, record: CalibrationRecord) -> Entry | None:
        return next(
            (e for e in self.entries(meter_id) if e.revoked is not None and e.record == record),
            None,
        )

    def _add(self, meter_id: str, record: CalibrationRecord, source: str, now_ns: int) -> bool:
        revoked = self._was_revoked(meter_id, record)
        if revoked is not None:
            raise CalibrationError(
                f"meter {meter_id!r}: certificate {record.certificate_no!r} was revoked"
                f" ({revoked.revoked}); it is not registered again"
            )
        current = self.standing(meter_id, record.certificate_no)
        if current is not None:
            if current.record == record:
                return False
            raise CalibrationError(
                f"meter {meter_id!r}: certificate {record.certificate_no!r} is already registered"
                " with other content; supersede it (with a reason) or revoke it first"
            )
        self.conn.execute(
            "INSERT INTO calibration_log (meter_id, action, certificate_no, record_json, source,"
            " at_ns) VALUES (?, 'add', ?, ?, ?, ?)",
            (meter_id, record.certificate_no, record.model_dump_json(), source, now_ns),
        )
        return True

    def _revoke(
        self, meter_id: str, certificate_no: str, reason: str, source: str, now_ns: int
    ) -> None:
        if not reason.strip():
            raise CalibrationError("a revocation needs a reason")
        if self.standing(meter_id, certificate_no) is None:
            known = sorted({e.record.certificate_no for e in self.entries(meter_id)})
            raise CalibrationError(
                f"meter {meter_id!r} has no standing certificate {certificate_no!r}"
                f" (registered: {', '.join(known) or 'none'})"
            )
        self.conn.execute(
            "INSERT INTO calibration_log (meter_id, action, certificate_no, reason, source, at_ns)"
            " VALUES (?, 'revoke', ?, ?, ?, ?)",
            (meter_id, certificate_no, reason, source, now_ns),
        )


# --- certificate files (paper certificates typed in; DCC XML: gateway.metrology.dcc) --------


class _Certificate(CalibrationRecord):
    meter_id: str = Field(min_length=1)


class _CertificateFile(Frozen):
    certificates: tuple[_Certificate, ...] = Field(min_length=1)


def file_source(path: Path, content: bytes) -> str:
    """How the registry names a file it imported from: its name and SHA-256."""
    return f"import {path.name} sha256:{hashlib.sha256(content).hexdigest()}"


def read_certificates(
    path: Path, content: bytes, meter_ids: Iterable[str]
) -> list[tuple[str, CalibrationRecord]]:
    """Certificates from a TOML file (`[[certificates]]` tables) or a CSV file (a header row
    of the same field names, empty cells for none), each with its `meter_id`; ConfigError
    lists every problem with where it is (`certificates[1].due_date`, `row 3: lab`)."""
    source = str(path)
    known = set(meter_ids)
    problems: list[ConfigProblem] = []
    found: list[tuple[str, _Certificate]] = []  # where in the file (a field path prefix), what
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not UTF-8 text ({exc})")]) from None
    if path.suffix.lower() == ".csv":
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise ConfigError(source, [ConfigProblem("", f"not readable as CSV: {exc}")]) from None
        for n, row in enumerate(rows, start=2):
            cells = {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}
            try:
                found.append((f"row {n}: ", _Certificate.model_validate(cells)))
            except ValidationError as exc:
                problems += [
                    ConfigProblem(f"row {n}: {p.path}", p.message) for p in problems_from(exc)
                ]
    else:
        try:
            table: Any = tomllib.loads(text)
            certificates = _CertificateFile.model_validate(table).certificates
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")]) from None
        except ValidationError as exc:
            raise ConfigError(source, problems_from(exc)) from None
        found = [(f"certificates[{i}].", c) for i, c in enumerate(certificates)]
    for place, cert in found:
        if cert.meter_id not in known and not cert.meter_id.startswith(STANDARD):
            problems.append(
                ConfigProblem(
                    f"{place}meter_id",
                    f"no meter {cert.meter_id!r} in the site configuration"
                    f" ({', '.join(sorted(known))}); a reference standard's certificate goes"
                    f" under {STANDARD}<its id>",
                )
            )
    if problems:
        raise ConfigError(source, problems)
    if not found:
        raise ConfigError(source, [ConfigProblem("", "no certificates in the file")])
    return [
        (c.meter_id, CalibrationRecord.model_validate(c.model_dump(exclude={"meter_id"})))
        for _, c in found
    ]
