"""`tanji demo`: the whole chain in one process (gateway.cli.demo_chain), shown live and
summed up."""

from __future__ import annotations

import enum
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.live import Live
from rich.table import Table

from gateway.cli.common import (
    err,
    out,
    run_async,
    setup_logging,
    stop_on_signals,
)
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING

if TYPE_CHECKING:  # the simulators are imported when the demo runs: `tanji` starts fast
    from gateway.cli.demo_summary import DemoParts, DemoSummary


class DemoTransport(enum.StrEnum):
    """How `tanji demo` has its gateway reach the platform simulator."""

    mqtt = "mqtt"
    https = "https"


def _demo_table(parts: DemoParts) -> Table:
    gw = parts.gateway
    link = parts.config.platform.transport.upper()
    table = Table(title=f"tanji demo — simulated meters → gateway → {link} → platform")
    for col in ("meter", "port", "energy kWh", "power kW", "readings", "bad", "status"):
        table.add_column(col, justify="right" if col not in ("meter", "status") else "left")
    for meter in parts.config.meters:
        st = gw.meter_status[meter.id]
        energy = st.last_values.get("active_energy_import")
        power = st.last_values.get("active_power")
        table.add_row(
            meter.id,
            str(
                getattr(meter.connection, "port", None)
                or urlsplit(getattr(meter.connection, "endpoint", "")).port
                or ""
            ),
            str(energy) if energy is not None else "-",
            f"{float(power):.2f}" if power is not None else "-",
            str(st.readings),
            str(st.bad),
            st.last_reason or "ok",
        )
    c = gw.sync.counters
    accepted = parts.platform.counters.accepted
    _, records = parts.platform.store.counts()
    table.caption = (
        f"stored {gw.readings_stored} readings · {gw.records_created} activity records · "
        f"published {c.published} · acks {c.acks} · platform accepted {accepted} batches"
        f" ({records} records) · {link} link {'up' if c.connected else 'down'}"
    )
    return table


def demo(
    duration: Annotated[
        float | None, typer.Option(help="stop after this many seconds and print a summary")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    meters: Annotated[
        int,
        typer.Option(min=1, max=200, help="simulated meters (from 4, the last is a main meter)"),
    ] = 4,
    interval: Annotated[
        int, typer.Option(min=2, max=900, help="aggregation period in seconds")
    ] = 10,
    workdir: Annotated[
        Path | None,
        typer.Option(help="a new or empty folder for the databases and site.toml (default: temp)"),
    ] = None,
    transport: Annotated[
        DemoTransport,
        typer.Option(help="how the gateway reaches the platform: MQTT, or HTTPS (mutual TLS)"),
    ] = DemoTransport.mqtt,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run simulated meters, an embedded broker (or HTTPS), the platform simulator and the
    gateway.

    Example: tanji demo --duration 30 --json
    Over HTTPS with mutual TLS (certificates made in the work dir): tanji demo --transport https
    """
    if duration is not None and duration <= 0:
        err.print("--duration must be a positive number of seconds")
        raise typer.Exit(EXIT_BAD_INPUT)
    if 86400 % interval:
        err.print(f"--interval {interval} must divide a day (86400 s), e.g. 5, 10, 15, 30, 60")
        raise typer.Exit(EXIT_BAD_INPUT)
    if workdir is not None and workdir.is_dir() and any(workdir.iterdir()):
        # a previous demo's databases would be counted against this run's simulated meters
        err.print(f"--workdir {workdir}: not empty; name a new or empty folder for this run")
        raise typer.Exit(EXIT_BAD_INPUT)
    setup_logging(verbose)
    from gateway.cli.demo_chain import run_demo

    wd = workdir or Path(tempfile.mkdtemp(prefix="tanji-demo-"))
    live = Live(console=err, refresh_per_second=2) if not as_json and err.is_terminal else None

    def tick(parts: DemoParts) -> None:
        if live is not None:
            live.update(_demo_table(parts))

    if live is None and not as_json:
        how_long = f"{duration:g} s" if duration else "until Ctrl-C"
        err.print(f"tanji demo: running ({how_long}); work dir {wd}")

    async def main() -> DemoSummary:
        stop = stop_on_signals()
        return await run_demo(
            wd, meters, interval, duration, tick, stop=stop, transport=transport.value
        )

    try:
        if live is not None:
            live.start()
        summary = run_async(main())
    finally:
        if live is not None:
            live.stop()
    if as_json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        table = Table(title="tanji demo summary", show_header=False)
        for key, value in summary.as_dict().items():
            table.add_row(key, str(value))
        out.print(table)
    if not summary.totals_match:
        raise typer.Exit(EXIT_FINDING)
