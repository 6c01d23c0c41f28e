"""`tanji trace`: a meter's traceability chain at a time (gateway.metrology.status)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from gateway.cli.calibration import store_and_registry
from gateway.cli.common import (
    SiteOption,
    err,
    out,
)
from gateway.config import load_site_config
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING

if TYPE_CHECKING:
    from gateway.metrology.status import Link


def trace(
    config: SiteOption,
    meter: Annotated[str, typer.Argument(help="meter id")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="time, ISO 8601 (e.g. 2026-11-25T10:00:00+08:00; default: now)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="export the chain as JSON")] = False,
) -> None:
    """The traceability chain valid at a time: reading -> meter -> certificate -> laboratory
    -> reference standard -> its certificate -> ... -> national standard, each link marked
    verified, expired or missing.

    Exit 1 when the chain is broken (a link not verified, or it does not reach a national
    measurement standard).

    Example: tanji trace -c site.toml L1-MAIN --at 2026-11-25T10:00:00+08:00
    """
    from gateway.metrology.status import complete, traced_point
    from gateway.metrology.status import trace as chain_of
    from gateway.periods import datetime_to_ns

    site = load_site_config(config)
    found = [m for m in site.meters if m.id == meter]
    if not found:
        err.print(f"no meter {meter!r} in {config} ({', '.join(m.id for m in site.meters)})")
        raise typer.Exit(EXIT_BAD_INPUT)
    when = _when(at, ZoneInfo(site.aggregation.timezone))
    store, registry = store_and_registry(site)
    m = found[0]
    reading = store.last_at(m.id, traced_point(m.points), datetime_to_ns(when))
    links = chain_of(m.meter(), reading, when, registry.entries, registry.find)
    if as_json:
        print(_chain_json(m.id, when, links))
    else:
        out.print(_chain_table(m.id, when, links))
    if not complete(links):
        err.print("the chain is broken: see the links not verified")
        raise typer.Exit(EXIT_FINDING)


def _when(at: str | None, tz: ZoneInfo) -> datetime:
    """--at in the site's time zone (a time without an offset is the site's local time, not
    this machine's); now without it."""
    from gateway.periods import datetime_to_ns

    try:
        given = datetime.fromisoformat(at) if at else datetime.now(tz)
        when = given.replace(tzinfo=tz) if given.tzinfo is None else given.astimezone(tz)
        datetime_to_ns(when)  # within the range of a timestamp
    except (ValueError, OverflowError) as exc:
        err.print(f"--at: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    return when


def _chain_json(meter_id: str, when: datetime, links: list[Link]) -> str:
    from gateway.metrology.status import complete

    return json.dumps(
        {
            "meter_id": meter_id,
            "at": when.isoformat(),
            "complete": complete(links),
            "links": [
                {"kind": x.kind, "state": str(x.state), "label": x.label, **x.details}
                for x in links
            ],
        },
        indent=2,
    )


def _chain_table(meter_id: str, when: datetime, links: list[Link]) -> Table:
    table = Table(title=f"traceability of {meter_id} at {when.isoformat()}")
    for col in ("", "link", "state", "what"):
        table.add_column(col)
    marks = {"verified": "[green]✓[/]", "expired": "[red]✗[/]", "missing": "[yellow]?[/]"}
    for i, x in enumerate(links):
        table.add_row(str(i + 1), x.kind, f"{marks[x.state]} {x.state}", x.label)
    return table
