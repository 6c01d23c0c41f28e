"""The `tanji` command: thin wrappers over library functions that the tests call directly.

Exit codes: 0 ok, 1 a finding (something needs attention), 2 bad usage or bad input.
Never shows a traceback for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from collectors import collector_types
from gateway.config import (
    ConfigError,
    SiteConfig,
    check_site,
    load_site_config,
    problems_from,
)
from gateway.models import PointKind
from gateway.store.sqlite import Store, StoreError

if TYPE_CHECKING:
    from cloud_sync import Outbox
    from gateway.activity.allocation import Allocation
    from gateway.activity.balance import BalanceConfig, BalanceResult
    from gateway.demo import DemoParts, DemoSummary
    from gateway.metrology.calibration import Registry
    from gateway.models import CalibrationRecord, CalibrationStatus

app = typer.Typer(
    help="tanji: edge metering gateway for product carbon-label certification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sim_app = typer.Typer(help="Run simulators of meters and of the platform.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
calibration_app = typer.Typer(
    help="The calibration registry: certificates of every meter, append-only.",
    no_args_is_help=True,
)
app.add_typer(calibration_app, name="calibration")
outbox_app = typer.Typer(
    help="Batches that are not on their way: dead letters (rejected by the platform) and held"
    " batches (records without a valid calibration).",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")
discover_app = typer.Typer(
    help="Find devices and the meter profiles that fit them.", no_args_is_help=True
)
app.add_typer(discover_app, name="discover")
keys_app = typer.Typer(help="Create the gateway's own certificates.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

EXIT_OK, EXIT_FINDING, EXIT_BAD_INPUT = 0, 1, 2
SiteOption = Annotated[Path, typer.Option("--config", "-c", help="site configuration (TOML)")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # asyncua.server: the simulated plant's notes on its own unsecured endpoint (not the site's)
    for noisy in ("pymodbus", "amqtt", "transitions", "asyncio", "asyncua.server"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop (libuv: about a third less CPU per Modbus request
    than the default loop, bench/README.md), or on asyncio's loop where uvloop is missing or
    TANJI_EVENT_LOOP=asyncio is set."""
    factory = None
    if os.environ.get("TANJI_EVENT_LOOP", "uvloop") != "asyncio":
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (systemd stop), so shutdowns are orderly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _load_site(path: Path) -> SiteConfig:
    """The site configuration, or every problem printed and exit 2."""
    try:
        return load_site_config(path)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _print_config_error(exc: ConfigError) -> None:
    err.print(f"[bold red]{exc.source}[/]: {len(exc.problems)} problem(s)", highlight=False)
    for problem in exc.problems:
        err.print(f"  {problem}", highlight=False, markup=False)


def _checked_site(path: Path) -> SiteConfig:
    """The site configuration with what the run needs from this machine checked
    (gateway.config.check_site), or every problem printed and exit 2."""
    try:
        return check_site(path)
    except ConfigError as exc:
        _print_config_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="site configuration (TOML)")],
    explain: Annotated[
        bool, typer.Option("--explain", help="show how each meter will be read (requests)")
    ] = False,
) -> None:
    """Validate a site.toml and list every problem with its field path; also that the
    store can be written and the platform link's certificates, key and password can be read.
    `tanji run` makes the same checks and does not start on any of these problems.

    Example: tanji check-config deploy/site.example.toml --explain
    """
    config = _checked_site(file)
    points = sum(len(m.points) for m in config.meters)
    out.print(
        f"{file}: ok — {config.enterprise.name} ({config.enterprise.uscc}), gateway"
        f" {config.gateway_id}, {len(config.meters)} meter(s), {points} point(s)",
        highlight=False,
    )
    if config.mqtt.platform_ack_key is None:  # allowed for a broker on this machine only
        out.print(
            "note: [mqtt] platform_ack_key is not set: the platform's acks are not"
            f" authenticated (allowed because the broker {config.mqtt.host} is on this machine)",
            highlight=False,
            markup=False,
        )
    unrated = [
        f"{m.id}.{p.name}"
        for m in config.meters
        for p in m.points
        if p.kind is PointKind.COUNTER
        and p.max_rate_per_h is None
        and (m.rated_power_kw is None or p.unit != "kWh")
    ]
    if unrated:  # gateway/activity/counters.py falls back to the meter's own recent rate
        out.print(
            f"note: no rating for the counter(s) {', '.join(unrated)} (rated_power_kw of the"
            " meter for kWh, or max_rate_per_h of the point): their steps are judged from"
            " the meter's own recent rate, which may refuse a short burst from idle"
            " (docs/configuration.md)",
            highlight=False,
            markup=False,
        )
    if explain:
        types = collector_types()
        for meter in config.meters:
            out.print(f"meter {meter.id}", highlight=False, markup=False)
            for line in types[meter.protocol].explain(meter):
                out.print(f"  {line}", highlight=False, markup=False)


@app.command()
def run(
    config: SiteOption,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the gateway for a site until Ctrl-C (or SIGTERM).

    Exit 0 after an orderly stop; 1 when a part of the gateway failed in a way it does not
    handle itself (one line names the task and the cause; a service manager restarts it);
    2 on bad input, or when another gateway already runs on the same store.

    Example: tanji run --config /etc/tanji/site.toml
    """
    _logging(verbose)
    site = _checked_site(config)  # what check-config calls an error stops the run here
    if site.mqtt.plaintext_password:
        logging.getLogger("tanji").warning(
            "mqtt: the password goes in clear over mqtt:// to %s (allow_plaintext_password"
            " = true); use mqtts:// unless that network is trusted",
            site.mqtt.host,
        )
    from gateway.runtime.supervisor import Gateway, GatewayFailed, describe_error
    from gateway.store.lock import StoreLock

    async def main() -> None:
        stop = _stop_on_signals()
        gateway = Gateway(site)
        task = asyncio.create_task(gateway.run())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            task.cancel()  # run() commits the readings collected so far on its way out
            with contextlib.suppress(asyncio.CancelledError):
                await task  # raises GatewayFailed when a task failed
        finally:
            stopping.cancel()
            await gateway.close()

    try:  # one gateway per store; held until this process ends, however it ends
        lock = StoreLock.acquire(site.store.path)
    except StoreError as exc:
        err.print(f"tanji: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    err.print(f"tanji: gateway {site.gateway_id} running; store {site.store.path}; Ctrl-C stops")
    try:
        _run(main())
    except StoreError as exc:
        err.print(f"[bold red]tanji:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except GatewayFailed as exc:  # a service manager restarts it (exit 1)
        err.print(f"tanji: gateway {site.gateway_id} stopped: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    except (OSError, sqlite3.Error) as exc:  # e.g. the disk is full before the store opened
        err.print(
            f"tanji: gateway {site.gateway_id} could not start: {describe_error(exc)}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_FINDING) from None
    finally:
        lock.release()
    err.print("tanji: stopped; collected readings were committed")


@app.command()
def status(
    config: SiteOption,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw snapshot")] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="print Prometheus metrics (node_exporter textfile format); exit 0 whenever"
            " there is a status to translate",
        ),
    ] = False,
) -> None:
    """Show how the running gateway's meters are polled (from its status file).

    Exit 1 when the gateway is not running (no fresh status) or something needs attention:
    a meter (its last reading was bad, or points were disabled), the store (refusing new
    readings: disk full, at its disk cap with nothing to evict; the cause is shown),
    aggregation (failed passes, late readings set aside for evicted periods), calibration
    (records held back for want of a valid calibration), the outbox (dead letters), the
    platform link (down: the reason is shown), the platform (a batch waits for its ack longer
    than 3 x ack_timeout_s: the broker is up but nobody acknowledges).

    Example: tanji status --config /etc/tanji/site.toml
    """
    site = _load_site(config)
    from gateway.runtime.supervisor import STATUS_INTERVAL_S, status_path_for

    path = status_path_for(site.store.path)
    try:
        snapshot = _read_status(path)
        age_s = (time.time_ns() - int(snapshot["written_ns"])) / 1e9
        attention = [
            m
            for m, st in snapshot["meters"].items()
            if st["last_reason"] or st["poll"]["disabled_points"]
        ]
        if snapshot.get("store_over_cap") or snapshot.get("store_refusing"):
            attention.append("store")
        if snapshot.get("aggregation_failures") or snapshot.get("readings_set_aside"):
            attention.append("aggregation")
        if snapshot.get("records_held"):
            attention.append("calibration")
        outbox = snapshot.get("outbox") or {}
        if outbox.get("dead_letters"):
            attention.append("outbox")
        unacked = outbox.get("oldest_pending_age_s")
        if unacked is not None and unacked > UNACKED_ATTENTION * site.mqtt.ack_timeout_s:
            attention.append("platform")  # sent, sent again, never acknowledged
        if not (snapshot.get("link") or {}).get("connected", True):
            attention.append("link")
        table = _status_table(snapshot, age_s, site.mqtt.ack_timeout_s)
    except FileNotFoundError:
        err.print(f"no status at {path}: the gateway has not run with this configuration")
        raise typer.Exit(EXIT_FINDING) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        err.print(f"{path}: not a tanji status file ({exc!r})", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    if metrics:
        from gateway.runtime.metrics import prometheus_text

        print(prometheus_text(snapshot, age_s), end="")
        return
    if as_json:
        print(json.dumps(snapshot, indent=2))
    else:
        out.print(table)
    stale = age_s > 3 * STATUS_INTERVAL_S
    if stale:
        err.print(f"status is {age_s:.0f} s old: is the gateway running?")
    if stale or attention:
        raise typer.Exit(EXIT_FINDING)


def _read_status(path: Path) -> Any:
    """The status file's JSON. On a full disk the gateway rewrites it in place, so a read
    may catch it half written: read again then."""
    for _ in range(3):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            time.sleep(0.2)
    return json.loads(path.read_text(encoding="utf-8"))


@app.command()
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
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from gateway.activity import report as rpt
    from gateway.activity.allocation import allocate
    from gateway.activity.balance import check as check_balance
    from gateway.periods import Interval, datetime_to_ns

    site = _load_site(config)
    tz = ZoneInfo(site.aggregation.timezone)
    try:
        first = date.fromisoformat(start) if start else datetime.now(tz).date()
        last = date.fromisoformat(end) if end else first + timedelta(days=1)
    except ValueError as exc:
        err.print(f"--from/--to: {exc} (use YYYY-MM-DD)", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if last <= first:
        err.print(f"--to ({last}) must be after --from ({first})")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        rollup_by = Interval.parse(by) if by is not None else None
    except ValueError as exc:
        err.print(f"--by: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not site.store.path.exists():
        err.print(f"no store at {site.store.path}: the gateway has not run with this site")
        raise typer.Exit(EXIT_FINDING)
    try:
        store = Store(site.store.path)
    except StoreError as exc:
        err.print(f"tanji: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None

    def midnight(d: date) -> int:
        return datetime_to_ns(datetime(d.year, d.month, d.day, tzinfo=tz))

    try:
        records = store.activity_records(midnight(first), midnight(last))
    except sqlite3.Error as exc:  # e.g. locked by a gateway in the middle of a write
        err.print(f"cannot read {site.store.path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    finally:
        store.close()
    rows = rpt.totals(records)
    allocation = allocate(rpt.latest_revisions(records))
    title = f"{site.enterprise.name} — activity data {first} to {last} (exclusive)"
    table = Table(title=title)
    columns = ("line", "meter", "point", "quantity", "U (k=2)", "unit", "periods", "coverage")
    for col in (*columns, "flags"):
        table.add_column(
            col,
            justify="right" if col in ("quantity", "U (k=2)", "periods", "coverage") else "left",
        )
    for t in rows:
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
    out.print(table)
    if allocation.products:
        out.print(_products_table(allocation))
    for b in site.balances:
        out.print(_balance_table(b, check_balance(b, rpt.latest_revisions(records))))
    if not rows:
        err.print("no activity records in this span")
    if any(rpt.flagged(t) for t in rows):
        err.print("some totals include gaps, expired calibrations or counters going backwards")
    try:
        if csv_path is not None and rollup_by is not None:
            csv_path.write_text(rpt.rollup_csv(rpt.rollup(records, rollup_by, tz)), "utf-8")
        elif csv_path is not None:
            csv_path.write_text(rpt.to_csv(records), encoding="utf-8")
        if html_path is not None:
            html_path.write_text(rpt.to_html(title, rows, allocation), encoding="utf-8")
    except ValueError as exc:  # records that do not divide the --by period
        err.print(f"--by {by}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        err.print(f"cannot write the report: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


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


def _link(link: dict[str, Any] | None) -> str:
    """The platform link part of the status caption."""
    if not link:
        return ""
    dropped = link.get("acks_dropped") or {}
    ignored = (
        f" · {sum(dropped.values())} messages on the ack topic dropped ("
        + ", ".join(f"{kind} {n}" for kind, n in sorted(dropped.items()))
        + ")"
        if dropped
        else ""
    )
    if link.get("connected"):
        return " · platform link up" + ignored
    return f" · PLATFORM LINK DOWN ({link.get('last_error') or 'connecting'})" + ignored


UNACKED_ATTENTION = 3  # x ack_timeout_s: a batch sent, sent again, and still not acknowledged


def _backlog(outbox: dict[str, Any] | None, ack_timeout_s: float) -> str:
    """The outbox part of the status caption: backlog, its age, dead letters."""
    if not outbox:
        return ""
    age = outbox.get("oldest_pending_age_s")
    text = f" · backlog {outbox['pending_batches']} batches" + (
        f" (oldest {age:.0f} s)" if age is not None else ""
    )
    if outbox.get("dead_letters"):
        text += f" · {outbox['dead_letters']} DEAD LETTERS (tanji outbox list)"
    if age is not None and age > UNACKED_ATTENTION * ack_timeout_s:
        text += " · NOT ACKNOWLEDGED: is the platform receiving?"
    return text


def _asked_again(at_s: float | None) -> str:
    """When a disabled point is asked again, for the status table: ' (asked again in 12 min)'."""
    if at_s is None:
        return ""
    wait = at_s - time.time()
    if wait <= 0:
        return " (asked again at its next cycle)"
    return (
        f" (asked again in {wait:.0f} s)"
        if wait < 120
        else f" (asked again in {wait / 60:.0f} min)"
    )


def _status_table(snapshot: dict[str, Any], age_s: float, ack_timeout_s: float) -> Table:
    table = Table(title=f"gateway {snapshot['gateway_id']} — status {age_s:.0f} s old")
    table.caption = (
        f"store {snapshot.get('store_used_mb', 0)} MB used"
        + (
            f" — STORE REFUSES NEW READINGS: {snapshot['store_refusing']}"
            f" ({snapshot.get('readings_pending', 0)} waiting in memory)"
            if snapshot.get("store_refusing")
            else " — AT ITS DISK CAP: new readings refused"
            if snapshot.get("store_over_cap")
            else ""
        )
        + f" · {snapshot.get('readings_refused', 0)} readings refused"
        + _backlog(snapshot.get("outbox"), ack_timeout_s)
        + _link(snapshot.get("link"))
        + f" · records {snapshot.get('records_created', 0)}"
        + f" ({snapshot.get('records_revised', 0)} revisions)"
        + (
            f" · {snapshot['readings_set_aside']} late readings SET ASIDE (their periods were"
            " evicted)"
            if snapshot.get("readings_set_aside")
            else ""
        )
        + (
            f" · {snapshot['records_held']} records HELD (no valid calibration;"
            " send_without_valid_calibration = false)"
            if snapshot.get("records_held")
            else ""
        )
        + (
            f" · {snapshot['aggregation_failures']} FAILED aggregation passes (see the log)"
            if snapshot.get("aggregation_failures")
            else ""
        )
    )
    table.add_column("meter")
    table.add_column("problem", overflow="fold")
    for col in ("readings (bad)", "cycles (overrun)", "timeouts (retried)", "p50/p95 ms"):
        table.add_column(col, justify="right")
    labelled = any(st.get("labels") for st in snapshot["meters"].values())
    if labelled:  # what the lines make now (product code, production order)
        table.add_column("making", overflow="fold")
    for meter_id, st in snapshot["meters"].items():
        poll = st["poll"]
        latency = poll["latency_ms"]
        problems = [st["last_reason"]] if st["last_reason"] else []
        retry_at = poll.get("disabled_retry_at", {})
        problems += [
            f"disabled: {p}{_asked_again(retry_at.get(p))}" for p in poll["disabled_points"]
        ]
        problems += [f"{name} x{n}" for name, n in poll["exceptions"].items()]
        problems += [f"{name} x{n}" for name, n in poll.get("bad_responses", {}).items()]
        p50, p95 = (latency[q] for q in ("p50", "p95"))
        table.add_row(
            meter_id,
            "; ".join(problems) or "ok",
            f"{st['readings']} ({st['bad']})",
            f"{poll['cycles']} ({poll['overruns']})",
            f"{poll['timeouts']} ({poll['retries']})",
            f"{p50:.1f}/{p95:.1f}" if p50 is not None and p95 is not None else "-",
            *([" / ".join(st.get("labels", {}).values()) or "-"] if labelled else []),
        )
    return table


def _demo_table(parts: DemoParts) -> Table:
    gw = parts.gateway
    table = Table(title="tanji demo — simulated meters → gateway → MQTT → platform")
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
        f" ({records} records) · broker {'up' if c.connected else 'down'}"
    )
    return table


@app.command()
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
        Path | None, typer.Option(help="where the databases and site.toml go (default: temp)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run simulated meters, an embedded broker, the platform simulator and the gateway.

    Example: tanji demo --duration 30 --json
    """
    if duration is not None and duration <= 0:
        err.print("--duration must be a positive number of seconds")
        raise typer.Exit(EXIT_BAD_INPUT)
    if 86400 % interval:
        err.print(f"--interval {interval} must divide a day (86400 s), e.g. 5, 10, 15, 30, 60")
        raise typer.Exit(EXIT_BAD_INPUT)
    _logging(verbose)
    from gateway.demo import run_demo

    wd = workdir or Path(tempfile.mkdtemp(prefix="tanji-demo-"))
    live = Live(console=err, refresh_per_second=2) if not as_json and err.is_terminal else None

    def tick(parts: DemoParts) -> None:
        if live is not None:
            live.update(_demo_table(parts))

    if live is None and not as_json:
        err.print(f"tanji demo: running ({duration or 'until Ctrl-C'} s); work dir {wd}")

    async def main() -> DemoSummary:
        stop = _stop_on_signals()
        return await run_demo(wd, meters, interval, duration, tick, stop=stop)

    try:
        if live is not None:
            live.start()
        summary = _run(main())
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


# --- calibration ---------------------------------------------------------------------------


def _registry(site: SiteConfig) -> Registry:
    """The site's registry (in its store), with site.toml's certificates registered."""
    return _store_and_registry(site)[1]


def _store_and_registry(site: SiteConfig) -> tuple[Store, Registry]:
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


def _calibration_rows(
    site: SiteConfig, registry: Registry, day: date
) -> list[tuple[str, CalibrationStatus, CalibrationRecord | None]]:
    from gateway.metrology.status import status_on

    rows = []
    for m in site.meters:
        status, entry = status_on(registry.entries(m.id), day)
        rows.append((m.id, status, entry.record if entry else None))
    return rows


def _calibration_table(
    title: str, rows: list[tuple[str, CalibrationStatus, CalibrationRecord | None]], day: date
) -> Table:
    table = Table(title=title)
    for col in ("meter", "status", "certificate", "kind", "lab", "due", "days left"):
        table.add_column(col, justify="right" if col == "days left" else "left")
    for meter_id, status, record in rows:
        colour = "green" if status == "valid" else "red"
        table.add_row(
            meter_id,
            f"[{colour}]{status}[/]",
            record.certificate_no if record else "",
            record.kind if record else "",
            record.lab if record else "",
            str(record.due_date) if record else "",
            str((record.due_date - day).days) if record else "",
        )
    return table


def _calibration_json(
    rows: list[tuple[str, CalibrationStatus, CalibrationRecord | None]], day: date
) -> str:
    return json.dumps(
        [
            {
                "meter_id": meter_id,
                "status": str(status),
                "certificate": record.model_dump(mode="json") if record else None,
                "days_left": (record.due_date - day).days if record else None,
            }
            for meter_id, status, record in rows
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


@calibration_app.command("list")
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
    site = _load_site(config)
    day = _day(at, site)
    rows = _calibration_rows(site, _registry(site), day)
    if as_json:
        print(_calibration_json(rows, day))
    else:
        out.print(_calibration_table(f"calibration status on {day}", rows, day))
    short = _class_findings(site)
    for finding in short:
        err.print(finding, highlight=False, markup=False)
    if short or any(status != "valid" for _, status, _ in rows):
        raise typer.Exit(EXIT_FINDING)


def _class_findings(site: SiteConfig) -> list[str]:
    """Meters whose accuracy class does not meet `required_accuracy_class` (or cannot be
    compared)."""
    from gateway.metrology.status import class_meets

    out = []
    for m in site.meters:
        if m.required_accuracy_class is None:
            continue
        meets = class_meets(m.carrier.value, m.accuracy_class, m.required_accuracy_class)
        if meets is False:
            out.append(
                f"{m.id}: accuracy class {m.accuracy_class} does not meet the required"
                f" {m.required_accuracy_class}"
            )
        elif meets is None:
            out.append(
                f"{m.id}: cannot compare class {m.accuracy_class} with the required"
                f" {m.required_accuracy_class} (no error limit known for one of them)"
            )
    return out


@calibration_app.command("due")
def calibration_due(
    config: SiteOption,
    days: Annotated[int, typer.Option("--days", min=0, help="look this many days ahead")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Meters whose calibration is due within --days, or not valid already.

    Exit 1 when there is any (for cron jobs and monitoring scripts), 0 when none.

    Example: tanji calibration due -c site.toml --days 30
    """
    site = _load_site(config)
    today = _day(None, site)
    rows = [
        (m, status, record)
        for m, status, record in _calibration_rows(site, _registry(site), today)
        if status != "valid" or (record and (record.due_date - today).days <= days)
    ]
    if as_json:
        print(_calibration_json(rows, today))
    elif rows:
        out.print(_calibration_table(f"due within {days} days or not valid", rows, today))
    else:
        err.print(f"no calibration due within {days} days")
    if rows:
        raise typer.Exit(EXIT_FINDING)


@calibration_app.command("import")
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

    site = _load_site(config)
    try:
        content = file.read_bytes()
    except OSError as exc:
        err.print(f"cannot read {file}: {exc.strerror}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if file.suffix.lower() == ".xml":
        certificates = [_read_dcc(file, content, site, due)]
    else:
        try:
            certificates = read_certificates(file, content, (m.id for m in site.meters))
        except ConfigError as exc:
            _print_config_error(exc)
            raise typer.Exit(EXIT_BAD_INPUT) from None
    if (supersede is None) != (reason is None) or (supersede and len(certificates) != 1):
        err.print("--supersede takes --reason and a file with exactly one certificate")
        raise typer.Exit(EXIT_BAD_INPUT)
    registry = _registry(site)
    source, now = file_source(file, content), time.time_ns()
    added = 0
    try:
        if supersede is not None and reason is not None:
            meter_id, record = certificates[0]
            registry.supersede(meter_id, supersede, record, reason, source, now)
            added = 1
        else:
            added = registry.add_all(certificates, source, now)  # all or none
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


@calibration_app.command("revoke")
def calibration_revoke(
    config: SiteOption,
    meter: Annotated[str, typer.Argument(help="meter id")],
    certificate: Annotated[str, typer.Argument(help="certificate number")],
    reason: Annotated[str, typer.Option("--reason", help="why it is withdrawn (kept)")],
) -> None:
    """Withdraw a registered certificate (it stays in the history, marked revoked).

    Example: tanji calibration revoke -c site.toml L1-MAIN JL-2026-0012 --reason "wrong meter"
    """
    from gateway.metrology.calibration import STANDARD, CalibrationError

    site = _load_site(config)
    if meter not in {m.id for m in site.meters} and not meter.startswith(STANDARD):
        err.print(f"no meter {meter!r} in {config} (reference standards: {STANDARD}<id>)")
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        _registry(site).revoke(meter, certificate, reason, "command line", time.time_ns())
    except CalibrationError as exc:
        err.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@calibration_app.command("history")
def calibration_history(
    config: SiteOption,
    meter: Annotated[str | None, typer.Argument(help="meter id (default: all)")] = None,
) -> None:
    """Everything the registry ever recorded, oldest first.

    Example: tanji calibration history -c site.toml L1-MAIN
    """
    site = _load_site(config)
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


# --- outbox ------------------------------------------------------------------------------


def _outbox(site: SiteConfig) -> Outbox:
    import cloud_sync

    try:
        store = Store(site.store.path)
        cloud_sync.create_schema(store.conn)
    except (StoreError, sqlite3.Error) as exc:
        err.print(f"tanji: {site.store.path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    return cloud_sync.Outbox(store.conn)


@outbox_app.command("list")
def outbox_list(
    config: SiteOption,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Dead letters and held batches, oldest first. Exit 1 when there are any.

    Example: tanji outbox list -c site.toml
    """
    parked = _outbox(_load_site(config)).parked()
    if as_json:
        print(json.dumps([p.__dict__ for p in parked], indent=2))
    else:
        table = Table(title="outbox: batches not on their way")
        for col in ("batch", "state", "records", "created (UTC)", "reason"):
            table.add_column(col, overflow="fold")
        for p in parked:
            created = datetime.fromtimestamp(p.created_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(p.batch_id, p.state, str(p.record_count), created, p.reason or "")
        out.print(table)
    if parked:
        raise typer.Exit(EXIT_FINDING)


def _outbox_targets(outbox: Outbox, batch: str | None, every: bool, state: str) -> list[str]:
    if (batch is None) == (not every):
        err.print("give a batch id or --all")
        raise typer.Exit(EXIT_BAD_INPUT)
    return [p.batch_id for p in outbox.parked() if p.state == state] if every else [batch or ""]


def _outbox_apply(action: Callable[[str], str], targets: list[str], verb: str) -> None:
    from cloud_sync import OutboxError

    for batch_id in targets:
        try:
            was = action(batch_id)
        except OutboxError as exc:
            err.print(str(exc), highlight=False, markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        err.print(f"{batch_id}: {was} -> {verb}", highlight=False)


def _requeue(
    config: Path,
    batch: str | None,
    every: bool,
    state: str,
    move: Callable[[Outbox], Callable[[str, int], str]],
) -> None:
    """Back on their way: the given batch, or --all batches in `state`."""
    outbox = _outbox(_load_site(config))
    targets = _outbox_targets(outbox, batch, every, state)
    _outbox_apply(lambda b: move(outbox)(b, time.time_ns()), targets, "pending")


@outbox_app.command("retry")
def outbox_retry(
    config: SiteOption,
    batch: Annotated[str | None, typer.Argument(help="batch id (see `tanji outbox list`)")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
) -> None:
    """Send dead letters again (after the cause on the platform side was fixed).

    Example: tanji outbox retry -c site.toml --all
    """
    _requeue(config, batch, every, "rejected", lambda outbox: outbox.retry)


@outbox_app.command("release")
def outbox_release(
    config: SiteOption,
    batch: Annotated[str | None, typer.Argument(help="batch id (see `tanji outbox list`)")] = None,
    every: Annotated[bool, typer.Option("--all", help="every held batch")] = False,
) -> None:
    """Send held batches (records without a valid calibration) after all.

    Example: tanji outbox release -c site.toml --all
    """
    _requeue(config, batch, every, "held", lambda outbox: outbox.release)


@outbox_app.command("discard")
def outbox_discard(
    config: SiteOption,
    batch: Annotated[str, typer.Argument(help="batch id (see `tanji outbox list`)")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept with the batch)")],
) -> None:
    """Give up on a dead letter or a held batch: kept in the store, marked discarded.

    Example: tanji outbox discard -c site.toml 3f2a... --reason "duplicate of a manual upload"
    """
    outbox = _outbox(_load_site(config))
    _outbox_apply(lambda b: outbox.discard(b, reason, time.time_ns()), [batch], "discarded")


@app.command()
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

    site = _load_site(config)
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
    store, registry = _store_and_registry(site)
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


@sim_app.command("modbus")
def sim_modbus(
    meters: Annotated[int, typer.Option(min=1, max=5000, help="number of meters")] = 3,
    base_port: Annotated[
        int, typer.Option(min=1, max=65535, help="TCP port of the first link; the rest follow")
    ] = 5020,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    profile: Annotated[
        str, typer.Option(help="register map to serve (see collectors/modbus/profiles)")
    ] = "tanji-sim",
    transport: Annotated[
        str, typer.Option(help="tcp | rtu-over-tcp | rtu (virtual serial lines)")
    ] = "tcp",
    units_per_link: Annotated[
        int, typer.Option(min=1, max=247, help="meters per port or serial line (unit ids 1..n)")
    ] = 1,
    baud: Annotated[int, typer.Option(min=1200, max=115200, help="rtu: line speed")] = 9600,
    scenario: Annotated[
        Path | None, typer.Option(help="TOML file of faults to replay (docs/simulators.md)")
    ] = None,
    journal: Annotated[
        Path | None,
        typer.Option(
            help="write the start time and each fault as it happens to this file (JSON lines),"
            " so every counter at any instant can be known afterwards (FleetJournal)"
        ),
    ] = None,
) -> None:
    """Serve simulated energy meters over Modbus until Ctrl-C.

    Example: tanji sim modbus --meters 3 --base-port 5020

    Read it with any Modbus client, e.g. the kWh counter of the first meter (register 1 in
    mbpoll's 1-based numbering, big-endian int32, x 0.01 kWh):
    mbpoll -1 -a 1 -r 1 -c 2 -t 4:int -B -p 5020 127.0.0.1
    """
    from collectors.modbus.profiles import ProfileError, load_profile
    from simulators.modbus_fleet import NOT_OVER_MODBUS, TRANSPORTS, MeterFleet, Scenario

    problems = []
    if transport not in TRANSPORTS:
        problems.append(f"--transport must be one of {', '.join(TRANSPORTS)} (got {transport!r})")
    links = -(-meters // units_per_link)
    if transport != "rtu" and base_port + links - 1 > 65535:
        problems.append(f"--base-port {base_port} + {links} links runs past port 65535")
    try:
        load_profile(profile)
    except ProfileError as exc:
        problems.append(f"--profile: {exc}")
    plan = None
    if scenario is not None:
        try:
            plan = Scenario.load(scenario)
            if any(e.fault in NOT_OVER_MODBUS for e in plan.events):
                problems.append(
                    "--scenario: changeover is for the OPC UA plant (tanji sim opcua): the"
                    " simulated meters make no products"
                )
        except ValueError as exc:
            problems.append(f"--scenario: {exc}")
    if problems:
        for problem in problems:
            err.print(problem, highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    _logging(False)

    async def main() -> None:
        fleet = MeterFleet(
            meters,
            base_port,
            host,
            profile=profile,
            transport=transport,  # type: ignore[arg-type]
            units_per_link=units_per_link,
            baudrate=baud,
            journal=journal,
        )
        try:
            await fleet.start()
            if plan is not None:
                fleet.play(plan)
        except (OSError, RuntimeError, ValueError) as exc:
            err.print(f"cannot start the simulator: {exc}", highlight=False, markup=False)
            await fleet.stop()
            raise typer.Exit(EXIT_BAD_INPUT) from None
        for link in range(fleet.links):
            first = link * units_per_link
            units = [fleet.unit_of(i) for i in range(first, min(meters, first + units_per_link))]
            where = (
                fleet.serial_port_of(first)
                if transport == "rtu"
                else f"{host}:{fleet.port_of(first)}"
            )
            out.print(
                f"{transport} {where}: unit id(s) {units[0]}..{units[-1]} ({profile})",
                highlight=False,
            )
        err.print(f"serving {meters} meter(s) on {fleet.links} link(s); Ctrl-C stops")
        try:
            await asyncio.Event().wait()
        finally:
            await fleet.stop()

    with contextlib.suppress(KeyboardInterrupt):
        _run(main())


@keys_app.command("opcua")
def keys_opcua(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the certificate and key")],
    gateway_id: Annotated[
        str, typer.Option(help="the application URI becomes urn:tanji:gateway:<this>")
    ],
    days: Annotated[int, typer.Option(min=1, max=36500, help="validity")] = 3650,
) -> None:
    """Create the gateway's OPC UA application instance certificate (self-signed, RSA 2048,
    SHA-256) and its private key; print the thumbprint to register at the servers.

    Example: tanji keys opcua --out /etc/tanji/opcua --gateway-id line-gw-01
    """
    from collectors.opcua.security import (
        create_application_certificate,
        load_certificate,
        thumbprint,
    )

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", gateway_id):
        err.print(f"--gateway-id {gateway_id!r}: letters, digits, '_', '.', '-' only")
        raise typer.Exit(EXIT_BAD_INPUT)
    existing = [out_dir / n for n in ("tanji-gateway.der", "tanji-gateway.key.pem")]
    if any(p.exists() for p in existing):
        err.print(
            f"{out_dir} already holds a gateway certificate or key; servers trust that one."
            " Move it away first to make a new one."
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    uri = f"urn:tanji:gateway:{gateway_id}"
    try:
        made = create_application_certificate(out_dir, uri, days=days)
    except OSError as exc:
        err.print(f"cannot write to {out_dir}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    out.print(f"certificate  {made.certificate}", highlight=False)
    out.print(f"private key  {made.private_key} (mode 0600)", highlight=False)
    out.print(f"application URI  {uri}", highlight=False)
    out.print(f"thumbprint (SHA-1)  {thumbprint(load_certificate(made.certificate))}")
    out.print(
        "Give the certificate to each OPC UA server's administrator to trust; in site.toml:\n"
        f'  certificate = "{made.certificate}"\n  private_key = "{made.private_key}"\n'
        '  trust_dir = "/etc/tanji/opcua/trusted"   # the servers\' certificates you trust',
        highlight=False,
        markup=False,
    )


@sim_app.command("opcua")
def sim_opcua(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port of the server")] = 4840,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    filler_namespaces: Annotated[
        int,
        typer.Option(
            min=0,
            max=100,
            help="namespaces registered before the plant's, so its index changes from one"
            " start to the next (clients must address nodes by namespace URI)",
        ),
    ] = 0,
    pki: Annotated[
        Path | None,
        typer.Option(
            help="secure the server: its certificate goes here, and it offers Basic256Sha256"
            " and Aes256_Sha256_RsaPss (Sign, SignAndEncrypt) beside None"
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="a user name that may log in")] = None,
    password_file: Annotated[Path | None, typer.Option(help="that user's password")] = None,
    user_certificate: Annotated[
        list[Path] | None, typer.Option(help="a certificate that may log in (repeatable)")
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            help="faults and product changeovers to replay, the Modbus simulator's TOML"
            " (meter = line index)"
        ),
    ] = None,
    max_per_request: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="advertise and enforce MaxNodesPerRead and MaxMonitoredItemsPerCall (larger"
            " requests fail with BadTooManyOperations, as on servers that limit them)",
        ),
    ] = None,
) -> None:
    """Serve a simulated plant over OPC UA until Ctrl-C: lines with an energy meter (kWh
    counter, kW) and production data (units made, product code, production order).

    Example: tanji sim opcua --port 4840, then in site.toml a point with
    node = "nsu=urn:tanji:sim:plant;s=Line1.Meter.ActiveEnergyImport".
    Secured: tanji sim opcua --pki /tmp/plant-pki --user operator --password-file pw.txt
    """
    from collectors.opcua.security import load_certificate, thumbprint
    from simulators.modbus_fleet import Scenario
    from simulators.opcua_plant import NOT_OVER_OPCUA, PLANT_NS, PlantSecurity, PlantServer

    problems = []
    plan = None
    if scenario is not None:
        try:
            plan = Scenario.load(scenario)
            unusable = sorted({e.fault.value for e in plan.events if e.fault in NOT_OVER_OPCUA})
            if unusable:
                problems.append(
                    f"--scenario: {', '.join(unusable)} is not simulated over OPC UA"
                    " (silent, exception, busy, frozen, replaced, noise, clear, changeover are)"
                )
        except ValueError as exc:
            problems.append(f"--scenario: {exc}")
    if (user is None) != (password_file is None):
        problems.append("--user and --password-file go together")
    if (user or user_certificate) and pki is None:
        problems.append("users need a secured server: give --pki DIR")
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--password-file {password_file}: {exc}")
    for cert in user_certificate or []:
        try:
            load_certificate(cert)
        except (OSError, ValueError) as exc:
            problems.append(f"--user-certificate {cert}: not a certificate ({exc})")
    if problems:
        for problem in problems:
            err.print(problem, highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    security = (
        PlantSecurity(
            pki,
            users=((user, password),) if user and password is not None else (),
            user_certificates=tuple(user_certificate or ()),
        )
        if pki is not None
        else None
    )
    _logging(False)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # our own message says it

    async def main() -> None:
        server = PlantServer(
            host,
            port,
            filler_namespaces=filler_namespaces,
            security=security,
            max_per_call=max_per_request,
        )
        try:
            plant = await server.__aenter__()
            if plan is not None:
                plant.play(plan)
        except (OSError, ValueError) as exc:
            err.print(f"cannot start the OPC UA simulator: {exc}", highlight=False, markup=False)
            await server.__aexit__(None, None, None)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        out.print(f"{plant.endpoint}  namespace {PLANT_NS} (index {plant.namespace_index})")
        if plant.certificate is not None:
            cert = load_certificate(plant.certificate)
            out.print(
                f"server certificate {plant.certificate} (thumbprint {thumbprint(cert)}):"
                " copy it into the gateway's trust_dir",
                highlight=False,
            )
        for line in plant.lines:
            for path in (
                "Meter.ActiveEnergyImport",
                "Meter.ActivePower",
                "Production.UnitsProduced",
                "Production.ProductCode",
            ):
                out.print(f"  nsu={PLANT_NS};s={line.name}.{path}", highlight=False)
        err.print("serving the simulated plant; Ctrl-C stops")
        try:
            await asyncio.Event().wait()
        finally:
            await plant.__aexit__(None, None, None)

    with contextlib.suppress(KeyboardInterrupt):
        _run(main())


@discover_app.command("opcua")
def discover_opcua(
    endpoint: Annotated[str, typer.Argument(help="opc.tcp://host:port/path")],
    security_policy: Annotated[
        str, typer.Option(help="None, Basic256Sha256 or Aes256_Sha256_RsaPss")
    ] = "None",
    security_mode: Annotated[str, typer.Option(help="None, Sign or SignAndEncrypt")] = "None",
    certificate: Annotated[Path | None, typer.Option(help="the gateway's certificate")] = None,
    private_key: Annotated[Path | None, typer.Option(help="its private key")] = None,
    trust_dir: Annotated[Path | None, typer.Option(help="trusted server certificates")] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_file: Annotated[Path | None, typer.Option()] = None,
    timeout: Annotated[float, typer.Option(min=0.5, max=60, help="seconds per request")] = 5.0,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000, help="nodes to visit")] = 20000,
) -> None:
    """Browse an OPC UA server for energy and production variables (data type, engineering
    unit, a guessed quantity) and print a site.toml fragment; exit 1 when none is found.

    Example: tanji discover opcua opc.tcp://127.0.0.1:4840/tanji/plant
    """
    from pydantic import ValidationError

    from collectors.opcua.collector import SecurityMismatch, connect
    from collectors.opcua.config import OpcUaConnection
    from collectors.opcua.discover import browse, site_fragment
    from collectors.opcua.security import TrustError

    try:
        conn = OpcUaConnection.model_validate(
            {
                "endpoint": endpoint,
                "security_policy": security_policy,
                "security_mode": security_mode,
                "certificate": str(certificate) if certificate else None,
                "private_key": str(private_key) if private_key else None,
                "trust_dir": str(trust_dir) if trust_dir else None,
                "username": username,
                "password_file": str(password_file) if password_file else None,
                "timeout_s": timeout,
            }
        )
    except ValidationError as exc:
        for found in problems_from(exc):
            err.print(f"option {found}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)

    async def main() -> list[Any]:
        client = await connect(conn)
        try:
            return await browse(client, limit)
        finally:
            await client.disconnect()

    try:
        candidates = _run(main())
    except (TrustError, SecurityMismatch) as exc:
        err.print(f"{endpoint}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    except (OSError, TimeoutError, ua_errors()) as exc:
        err.print(f"{endpoint}: cannot browse: {exc!r}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    except (ValueError, TypeError) as exc:  # an unreadable key, certificate or password file
        err.print(f"{endpoint}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    table = Table(title=f"{endpoint}: variables")
    for col in ("node", "path", "type", "unit", "guess"):
        table.add_column(col)
    useful = [c for c in candidates if c.quantity is not None]
    for c in useful or candidates[:50]:
        guess = f"{c.quantity} ({c.kind})" if c.quantity else "-"
        table.add_row(c.node, c.path, c.data_type, c.unit or "-", guess)
    err.print(table)
    if not useful:
        err.print(f"{len(candidates)} variables, none with an energy or power unit or a count")
        raise typer.Exit(EXIT_FINDING)
    print(site_fragment(endpoint, useful))


def ua_errors() -> type[Exception]:
    from asyncua.ua.uaerrors import UaError

    return UaError


@discover_app.command("modbus")
def discover_modbus(
    target: Annotated[
        str | None, typer.Argument(help="HOST[:PORT] of a Modbus TCP device or device server")
    ] = None,
    serial: Annotated[
        str | None, typer.Option(help="serial port instead, e.g. /dev/ttyUSB0")
    ] = None,
    rtu_over_tcp: Annotated[
        bool, typer.Option("--rtu-over-tcp", help="TARGET speaks RTU frames (device server)")
    ] = False,
    units: Annotated[str, typer.Option(help="unit ids to try: 1-16, or 1,3,5")] = "1-16",
    baud: Annotated[int, typer.Option(help="serial: baud rate")] = 9600,
    parity: Annotated[str, typer.Option(help="serial: N, E or O")] = "E",
    timeout: Annotated[float, typer.Option(min=0.05, max=10, help="seconds per request")] = 0.5,
    profile: Annotated[
        list[str] | None, typer.Option(help="only try these profiles (repeatable)")
    ] = None,
) -> None:
    """Scan unit ids, try the known meter profiles, print a site.toml fragment.

    Example: tanji discover modbus 127.0.0.1:5020 --units 1-4

    Example: tanji discover modbus --serial /dev/ttyUSB0 --baud 9600 --parity N
    """
    from collectors.modbus.discover import device_for_link, discover, site_fragment
    from collectors.modbus.link import RequestFailed
    from collectors.modbus.profiles import ProfileError, load_profile
    from gateway.config import problems_from

    problems: list[str] = []
    unit_ids = _unit_ids(units, problems)
    if (target is None) == (serial is None):
        problems.append("give either TARGET (host[:port]) or --serial DEVICE")
    for name in profile or []:
        try:
            load_profile(name)
        except ProfileError as exc:
            problems.append(f"--profile: {exc}")
    connection: dict[str, Any] = {"timeout_s": timeout, "retries": 0}
    protocol = "modbus_rtu" if serial else "modbus_rtu_over_tcp" if rtu_over_tcp else "modbus_tcp"
    if serial:
        connection.update(serial_port=serial, baudrate=baud, parity=parity.upper())
    elif target:
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "502")
        # a port is a number to the configuration (which refuses "502"); text stays text
        connection.update(host=host, port=int(port) if port.isdigit() else port)
    device = None
    if not problems:
        try:
            device = device_for_link(protocol, connection)
        except ValidationError as exc:
            problems += [f"{p.path.split('.')[-1]}: {p.message}" for p in problems_from(exc)]
    if problems or device is None:
        for problem in problems:
            err.print(problem, highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    _logging(False)
    logging.getLogger("collectors").setLevel(logging.CRITICAL)  # refusals are expected here
    where = serial or target

    async def scan() -> list[Any]:
        with err.status(f"scanning {where}") as status:
            return await discover(
                device,
                unit_ids,
                profile,
                progress=lambda u: status.update(f"scanning {where}: unit {u}"),
            )

    try:
        findings = _run(scan())
    except RequestFailed:
        err.print(f"cannot connect to {where}", highlight=False)
        raise typer.Exit(EXIT_FINDING) from None
    table = Table(title=f"Modbus devices on {where}")
    for col in ("unit", "answer", "best profile", "points read", "sample"):
        table.add_column(col)
    for f in findings:
        if not f.answered:
            continue
        best = f.best
        table.add_row(
            str(f.unit_id),
            f.reason,
            f"{best.profile.id}{'' if best.profile.verified else ' (unverified)'}" if best else "-",
            f"{best.good}/{best.total}" if best else "-",
            ", ".join(f"{k}={v}" for k, v in best.sample.items()) if best else "",
        )
    out.print(table)
    fragment = site_fragment(device, findings)
    if fragment:
        out.print(fragment, highlight=False, markup=False)
    else:
        answered = any(f.answered for f in findings)
        err.print("no unit matched a known profile" if answered else "no units answered")
        raise typer.Exit(EXIT_FINDING)


def _unit_ids(spec: str, problems: list[str]) -> list[int]:
    ids: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            ids += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        problems.append(f"--units: {spec!r} is not like 1-16 or 1,3,5")
        return []
    if not ids or not all(0 <= u <= 255 for u in ids):
        problems.append(f"--units: {spec!r}: unit ids are 0..255")
    return ids


@sim_app.command("platform")
def sim_platform(
    broker: Annotated[str, typer.Option(help="broker URL, mqtt:// or mqtts://")] = (
        "mqtt://127.0.0.1:1883"
    ),
    db: Annotated[Path, typer.Option(help="the platform's SQLite file")] = Path("platform.db"),
    dsn: Annotated[
        str | None,
        typer.Option(help="PostgreSQL instead of SQLite, e.g. postgresql://user@host/db"),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            help="consume through the shared subscription $share/GROUP/... so that"
            " several instances split the load"
        ),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(help="MQTT client id, one per instance (default tanji-platform-sim)"),
    ] = None,
    prefix: Annotated[str, typer.Option(help="topic prefix")] = "tanji/v1",
    protocol: Annotated[str, typer.Option(help="MQTT protocol: 5 or 3.1.1")] = "5",
    ca_file: Annotated[Path | None, typer.Option(help="CA of the broker's certificate")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="client certificate")] = None,
    key_file: Annotated[Path | None, typer.Option(help="client certificate's key")] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_file: Annotated[Path | None, typer.Option()] = None,
    ack_key: Annotated[
        Path | None,
        typer.Option(
            help="the platform's ack signing key (PEM), made when missing, its public key"
            " written beside it as NAME.pub.pem; default platform-ack.key next to --db"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Receive activity batches, validate them, store them and ack them (signed), until Ctrl-C.

    Example: tanji sim platform --broker mqtt://127.0.0.1:1883 --db /tmp/platform.db
    (gateways verify its acks with platform_ack_key = "/tmp/platform-ack.pub.pem")
    Two instances sharing the load, a database and the signing key:
    tanji sim platform --group platform --client-id p1 --dsn postgresql://platform@127.0.0.1/p
    --ack-key /etc/tanji-platform/ack.key
    """
    from pydantic import ValidationError

    from cloud_sync.transport import MqttConfig

    try:
        mqtt = MqttConfig(
            broker_url=broker,
            protocol=protocol,  # pydantic checks the literal
            topic_prefix=prefix,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            username=username,
            password_file=password_file,
        )
    except ValidationError as exc:
        for found in problems_from(exc):
            err.print(f"option {found}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    problems: list[str] = []
    if group is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", group):
        problems.append(f"--group {group!r}: letters, digits, '_', '.', '-' only")
    if group is not None and client_id is None:
        problems.append("--group needs a --client-id of its own for each instance")
    shown = _redacted(dsn) if dsn else str(db)
    if dsn is not None and not dsn.startswith(("postgresql://", "postgres://")):
        problems.append(f"--dsn {shown!r}: expected postgresql://USER@HOST:PORT/DATABASE")
    if dsn is not None and ack_key is None:
        problems.append("--dsn needs --ack-key FILE: the signing key its instances share")
    from cloud_sync import TransportError

    try:
        mqtt.tls_context()
        mqtt.password()
    except TransportError as exc:
        problems.append(str(exc))
    from simulators.platform import PlatformReceiver, ack_signer, public_key_path

    key_path = (ack_key or db.parent / "platform-ack.key").absolute()
    signer = None
    if not problems:  # made only for a simulator that will run
        try:
            signer = ack_signer(key_path)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            err.print(problem, highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    _logging(verbose)
    try:
        receiver = PlatformReceiver(
            dsn or db, mqtt, client_id or "tanji-platform-sim", group, signer
        )
    except Exception as exc:  # psycopg or sqlite3 cannot open the database
        text = str(exc).replace(dsn, shown) if dsn else str(exc)
        err.print(f"platform database {shown}: {text}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    err.print(f"platform simulator: {broker}, {', '.join(receiver.subscriptions)}, store {shown}")
    err.print(
        f"acks signed with key {receiver.signer.key_id[:16]}…; gateways verify them with"
        f' [mqtt] platform_ack_key = "{public_key_path(key_path)}"',
        highlight=False,
        markup=False,
        soft_wrap=True,  # a path to copy, in one piece
    )
    try:
        _run(receiver.run())
    except KeyboardInterrupt:
        c = receiver.counters
        err.print(f"accepted {c.accepted}, duplicates {c.duplicates}, rejected {c.rejected}")


def _redacted(dsn: str) -> str:
    """A connection URL without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def main() -> None:
    app()
