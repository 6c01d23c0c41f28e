"""`tanji calibration list|due|import|revoke|history`: the calibration registry
(gateway.metrology) from the command line."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gateway.cli.common import (
    SiteOption,
    err,
    out,
)
from gateway.config import SiteConfig, load_site_config
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING
from gateway.store.sqlite import Store, StoreError

if TYPE_CHECKING:
    from gateway.metrology.calibration import MeterCalibration, Registry
    from gateway.models import CalibrationRecord


def _registry(site: SiteConfig) -> Registry:
    """The site's registry (in its store), with site.toml's certificates registered."""
    return store_and_registry(site)[1]


def store_and_registry(site: SiteConfig) -> tuple[Store, Registry]:
    from gateway.metrology.calibration import Registry

    try:
        store = Store(site.store.path)
        registry = Registry(store.conn)
        registry.sync_site(
            ((m.id, m.calibration) for m in site.meters if m.calibration), time.time_ns()
        )
    except (StoreError, sqlite3.Error) as exc:
        err.print(f"tanji: {site.store.path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    return store, registry


def _calibration_table(title: str, rows: list[MeterCalibration], day: date) -> Table:
    table = Table(title=title)
    for col in ("meter", "status", "certificate", "kind", "lab", "due", "days left"):
        table.add_column(col, justify="right" if col == "days left" else "left")
    for row in rows:
        colour = "green" if row.status == "valid" else "red"
        record = row.record
        table.add_row(
            row.meter_id,
            f"[{colour}]{row.status}[/]",
            record.certificate_no if record else "",
            record.kind if record else "",
            record.lab if record else "",
            str(record.due_date) if record else "",
            str(row.days_left(day)) if record else "",
        )
    return table


def _calibration_json(rows: list[MeterCalibration], day: date) -> str:
    return json.dumps(
        [
            {
                "meter_id": row.meter_id,
                "status": str(row.status),
                "certificate": row.record.model_dump(mode="json") if row.record else None,
                "days_left": row.days_left(day),
            }
            for row in rows
        ],
        indent=2,
    )


def _day(text: str | None, site: SiteConfig) -> date:
    from zoneinfo import ZoneInfo

    if text is None:
        return datetime.now(ZoneInfo(site.aggregation.timezone)).date()
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        err.print(f"--at: {exc} (use YYYY-MM-DD)", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def calibration_list(
    config: SiteOption,
    at: Annotated[str | None, typer.Option("--at", help="day, YYYY-MM-DD (default: today)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each meter's calibration status on a day and the certificate that decides it.

    Exit 1 when a meter has no valid calibration that day, or its accuracy class does not meet
    its `required_accuracy_class`.

    Example: tanji calibration list -c site.toml --at 2026-12-01
    """
    from gateway.metrology.status import class_findings

    site = load_site_config(config)
    day = _day(at, site)
    rows = _registry(site).statuses((m.id for m in site.meters), day)
    if as_json:
        print(_calibration_json(rows, day))
    else:
        out.print(_calibration_table(f"calibration status on {day}", rows, day))
    short = class_findings(
        (m.id, m.carrier.value, m.accuracy_class, m.required_accuracy_class) for m in site.meters
    )
    for finding in short:
        err.print(finding, highlight=False, markup=False)
    if short or any(row.status != "valid" for row in rows):
        raise typer.Exit(EXIT_FINDING)


def calibration_due(
    config: SiteOption,
    days: Annotated[int, typer.Option("--days", min=0, help="look this many days ahead")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Meters whose calibration is due within --days, or not valid already.

    Exit 1 when there is any (for cron jobs and monitoring scripts), 0 when none.

    Example: tanji calibration due -c site.toml --days 30
    """
    site = load_site_config(config)
    today = _day(None, site)
    statuses = _registry(site).statuses((m.id for m in site.meters), today)
    rows = [row for row in statuses if row.due_within(today, days)]
    if as_json:
        print(_calibration_json(rows, today))
    elif rows:
        out.print(_calibration_table(f"due within {days} days or not valid", rows, today))
    else:
        err.print(f"no calibration due within {days} days")
    if rows:
        raise typer.Exit(EXIT_FINDING)


def calibration_import(
    config: SiteOption,
    file: Annotated[Path, typer.Argument(help="certificates: .toml, .csv, or a DCC .xml")],
    due: Annotated[
        str | None,
        typer.Option("--due", help="due date of a DCC's calibration, YYYY-MM-DD (DCCs have none)"),
    ] = None,
    supersede: Annotated[
        str | None,
        typer.Option("--supersede", help="certificate number the (single) imported one replaces"),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="why, with --supersede")] = None,
) -> None:
    """Register certificates from a file: a PTB Digital Calibration Certificate (DCC 3.3.0
    XML, checked against its schema, matched to a meter by serial number; give --due), or
    paper certificates typed into TOML or CSV.

    TOML: [[certificates]] tables; CSV: a header row. Fields: meter_id, certificate_no, kind
    (calibration|verification), lab, accreditation_no, calibration_date, due_date, result
    (pass|fail|correction), errors_found, expanded_uncertainty, coverage_factor,
    correction_percent, reference_standard, reference_standard_certificate,
    reference_standard_lab, reference_standard_is_national, dcc_sha256.
    The file's name and SHA-256 are recorded with each certificate.

    Examples: tanji calibration import -c site.toml certificates-2026.csv
              tanji calibration import -c site.toml 2026-0815.dcc.xml --due 2027-08-14
    """
    from gateway.metrology.calibration import CalibrationError, file_source, read_certificates

    site = load_site_config(config)
    try:
        content = file.read_bytes()
    except OSError as exc:
        err.print(f"cannot read {file}: {exc.strerror}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if file.suffix.lower() == ".xml":
        certificates = [_read_dcc(file, content, site, due)]
    else:
        # a ConfigError (every problem with where it is) ends the command, exit 2
        certificates = read_certificates(file, content, (m.id for m in site.meters))
    if (supersede is None) != (reason is None) or (supersede and len(certificates) != 1):
        err.print("--supersede takes --reason and a file with exactly one certificate")
        raise typer.Exit(EXIT_BAD_INPUT)
    source = file_source(file, content)
    try:
        added = _registry(site).register(
            certificates, source, time.time_ns(), supersede, reason or ""
        )
    except CalibrationError as exc:
        err.print(f"{file}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    err.print(f"{added} certificate(s) registered, {len(certificates) - added} already were")


def _read_dcc(
    file: Path, content: bytes, site: SiteConfig, due: str | None
) -> tuple[str, CalibrationRecord]:
    from gateway.metrology.dcc import DccError, read_dcc

    if due is None:
        err.print(
            f"{file}: a DCC states no due date (the owner sets the recalibration interval);"
            " give it with --due YYYY-MM-DD"
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        return read_dcc(content, date.fromisoformat(due), {m.serial: m.id for m in site.meters})
    except ValueError as exc:  # DccError, or a bad --due
        where = "--due" if not isinstance(exc, DccError) else str(file)
        err.print(f"{where}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def calibration_revoke(
    config: SiteOption,
    meter: Annotated[str, typer.Argument(help="meter id")],
    certificate: Annotated[str, typer.Argument(help="certificate number")],
    reason: Annotated[str, typer.Option("--reason", help="why it is withdrawn (kept)")],
) -> None:
    """Withdraw a registered certificate (it stays in the history, marked revoked).

    Example: tanji calibration revoke -c site.toml L1-MAIN JL-2026-0012 --reason "wrong meter"
    """
    from gateway.metrology.calibration import STANDARD

    site = load_site_config(config)
    if meter not in {m.id for m in site.meters} and not meter.startswith(STANDARD):
        err.print(f"no meter {meter!r} in {config} (reference standards: {STANDARD}<id>)")
        raise typer.Exit(EXIT_BAD_INPUT)
    # a CalibrationError (no such certificate standing) ends the command, exit 2
    _registry(site).revoke(meter, certificate, reason, "command line", time.time_ns())


def calibration_history(
    config: SiteOption,
    meter: Annotated[str | None, typer.Argument(help="meter id (default: all)")] = None,
) -> None:
    """Everything the registry ever recorded, oldest first.

    Example: tanji calibration history -c site.toml L1-MAIN
    """
    site = load_site_config(config)
    if meter is not None and meter not in {m.id for m in site.meters} and ":" not in meter:
        err.print(f"no meter {meter!r} in {config}")
        raise typer.Exit(EXIT_BAD_INPUT)
    table = Table(title="calibration registry")
    for col in ("#", "when (UTC)", "meter", "action", "certificate", "detail", "source"):
        table.add_column(col)
    for row in _registry(site).log(meter):
        detail = (
            f"{row.record.calibration_date} .. {row.record.due_date}, {row.record.result}"
            if row.record
            else str(row.reason)
        )
        when = datetime.fromtimestamp(row.at_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(row.seq), when, row.meter_id, row.action, row.certificate_no, detail, row.source
        )
    out.print(table)
