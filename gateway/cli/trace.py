"""`tanji trace`: a meter's traceability chain at a time (gateway.metrology.status)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from gateway.cli.calibration import store_and_registry
from gateway.cli.common import (
    SiteOption,
    err,
    load_site,
    out,
)
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING


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
    from zoneinfo import ZoneInfo

    from gateway.metrology.status import complete
    from gateway.metrology.status import trace as chain_of
    from gateway.periods import datetime_to_ns

    site = load_site(config)
    found = [m for m in site.meters if m.id == meter]
    if not found:
        err.print(f"no meter {meter!r} in {config} ({', '.join(m.id for m in site.meters)})")
        raise typer.Exit(EXIT_BAD_INPUT)
    tz = ZoneInfo(site.aggregation.timezone)
    try:
        given = datetime.fromisoformat(at) if at else datetime.now(tz)
        # a time without an offset is the site's local time, not this machine's
        when = given.replace(tzinfo=tz) if given.tzinfo is None else given.astimezone(tz)
        datetime_to_ns(when)
    except (ValueError, OverflowError) as exc:
        err.print(f"--at: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    store, registry = store_and_registry(site)
    m = found[0]
    counters = (
        [p for p in m.points if p.kind == "counter"]
        or [p for p in m.points if p.kind != "label"]
        or list(m.points)
    )
    reading = store.last_at(m.id, counters[0].name, datetime_to_ns(when))
    links = chain_of(m.meter(), reading, when, registry.entries, registry.find)
    if as_json:
        print(
            json.dumps(
                {
                    "meter_id": m.id,
                    "at": when.isoformat(),
                    "complete": complete(links),
                    "links": [
                        {"kind": x.kind, "state": str(x.state), "label": x.label, **x.details}
                        for x in links
                    ],
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"traceability of {m.id} at {when.isoformat()}")
        for col in ("", "link", "state", "what"):
            table.add_column(col)
        marks = {"verified": "[green]✓[/]", "expired": "[red]✗[/]", "missing": "[yellow]?[/]"}
        for i, x in enumerate(links):
            table.add_row(str(i + 1), x.kind, f"{marks[x.state]} {x.state}", x.label)
        out.print(table)
    if not complete(links):
        err.print("the chain is broken: see the links not verified")
        raise typer.Exit(EXIT_FINDING)
