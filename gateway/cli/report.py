"""`tanji report`: activity data for a span of days, as tables, CSV or a page with charts.
The figures come from gateway.activity.report (`span_report`); this module parses and prints."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from gateway.cli.common import SiteOption, err, out
from gateway.config import load_site_config
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING
from gateway.periods import Interval
from gateway.store.sqlite import Store

if TYPE_CHECKING:
    from gateway.activity.allocation import Allocation
    from gateway.activity.balance import BalanceConfig, BalanceResult
    from gateway.activity.report import SpanReport, Total


def report(
    config: SiteOption,
    start: Annotated[
        str | None, typer.Option("--from", help="first day, YYYY-MM-DD (default: today)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="day after the last, YYYY-MM-DD (default: +1 day)")
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="write every record here")] = None,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="write a page with charts here")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="CSV of roll-ups per hour, day or month instead of records"),
    ] = None,
) -> None:
    """Activity data per line, meter and point for a span of days (site time zone), and
    energy per product where lines have production counters.

    Example: tanji report -c site.toml --from 2026-11-01 --to 2026-12-01 --by day --csv nov.csv
    """
    from gateway.activity.report import span_report

    site = load_site_config(config)
    tz = ZoneInfo(site.aggregation.timezone)
    first, last = _days(start, end, tz)
    rollup_by = _interval(by)
    if not site.store.path.exists():
        err.print(f"no store at {site.store.path}: the gateway has not run with this site")
        raise typer.Exit(EXIT_FINDING)
    store = Store(site.store.path)  # a StoreError ends the command (exit 2)
    try:
        span = span_report(store, first, last, tz, site.balances)
    except sqlite3.Error as exc:  # e.g. locked by a gateway in the middle of a write
        err.print(f"cannot read {site.store.path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    finally:
        store.close()
    title = f"{site.enterprise.name} — activity data {first} to {last} (exclusive)"
    _print(span, title)
    try:
        if csv_path is not None:
            csv_path.write_text(span.csv(rollup_by), encoding="utf-8")
        if html_path is not None:
            html_path.write_text(span.html(title), encoding="utf-8")
    except ValueError as exc:  # records that do not divide the --by period
        err.print(f"--by {by}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        err.print(f"cannot write the report: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _days(start: str | None, end: str | None, tz: ZoneInfo) -> tuple[date, date]:
    """--from and --to: the first day and the day after the last (default: today only)."""
    try:
        first = date.fromisoformat(start) if start else datetime.now(tz).date()
        last = date.fromisoformat(end) if end else first + timedelta(days=1)
    except ValueError as exc:
        err.print(f"--from/--to: {exc} (use YYYY-MM-DD)", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if last <= first:
        err.print(f"--to ({last}) must be after --from ({first})")
        raise typer.Exit(EXIT_BAD_INPUT)
    return first, last


def _interval(by: str | None) -> Interval | None:
    try:
        return Interval.parse(by) if by is not None else None
    except ValueError as exc:
        err.print(f"--by: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _print(span: SpanReport, title: str) -> None:
    out.print(_totals_table(title, span.totals))
    if span.allocation.products:
        out.print(_products_table(span.allocation))
    for balance, results in span.balances:
        out.print(_balance_table(balance, results))
    if not span.totals:
        err.print("no activity records in this span")
    if span.flagged:
        err.print("some totals include gaps, expired calibrations or counters going backwards")


def _totals_table(title: str, totals: list[Total]) -> Table:
    table = Table(title=title)
    columns = ("line", "meter", "point", "quantity", "U (k=2)", "unit", "periods", "coverage")
    for col in (*columns, "flags"):
        table.add_column(
            col,
            justify="right" if col in ("quantity", "U (k=2)", "periods", "coverage") else "left",
        )
    for t in totals:
        table.add_row(
            t.line,
            t.meter_id,
            t.point,
            str(t.quantity),
            t.expanded,
            t.unit,
            str(t.records),
            f"{t.coverage:.1%}",
            ", ".join(f"{k} x{n}" for k, n in sorted(t.flags.items())),
        )
    return table


def _balance_table(balance: BalanceConfig, results: list[BalanceResult]) -> Table:
    from gateway.activity.balance import summary

    counts = summary(results)
    table = Table(
        title=f"energy balance: {balance.main} vs {' + '.join(balance.subs)}"
        f" (tolerance {balance.tolerance_percent} %)",
        caption=", ".join(f"{n} {state}" for state, n in counts.items()),
    )
    for col in ("period", "main", "sub-meters", "difference", "%", "U (k=2)", "state"):
        table.add_column(col, justify="left" if col in ("period", "state") else "right")
    shown = [r for r in results if r.state != "ok"][:50]  # the periods to look at
    for r in shown:
        colour = "red" if r.state == "imbalance" else "yellow"
        table.add_row(
            r.period_start.isoformat(),
            str(r.main_quantity if r.main_quantity is not None else ""),
            str(r.subs_quantity if r.subs_quantity is not None else ""),
            str(r.difference if r.difference is not None else ""),
            f"{r.percent:.2f}" if r.percent is not None else "",
            f"{r.expanded_uncertainty:.2g}" if r.expanded_uncertainty is not None else "",
            f"[{colour}]{r.state}[/] {r.why}",
        )
    return table


def _products_table(allocation: Allocation) -> Table:
    from gateway.activity.report import per_unit

    table = Table(title="energy per product (split by output; idle: periods without output)")
    for col in ("line", "product", "output", "carrier", "energy", "unit", "per unit"):
        table.add_column(
            col, justify="right" if col in ("output", "energy", "per unit") else "left"
        )
    for p in allocation.products:
        for (carrier, unit), value in sorted(p.energy.items()):
            table.add_row(
                p.line,
                p.product,
                str(p.output),
                carrier,
                str(value),
                unit,
                per_unit(p.per_unit((carrier, unit))),
            )
    for line in allocation.lines:
        for (carrier, unit), value in sorted(line.idle.items()):
            table.add_row(line.line, "(idle)", "0", carrier, str(value), unit, "")
    return table
