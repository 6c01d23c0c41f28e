"""`tanji check-config` and `tanji run`: a site's configuration checked, and the gateway
run for it. Parsing and printing only; the gateway itself is gateway.runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from collectors import collector_types
from gateway.cli.common import (
    SiteOption,
    err,
    out,
    run_async,
    setup_logging,
    stop_on_signals,
)
from gateway.config import check_site, site_notes
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING
from gateway.store.sqlite import StoreError


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
    config = check_site(file)
    points = sum(len(m.points) for m in config.meters)
    out.print(
        f"{file}: ok — {config.enterprise.name} ({config.enterprise.uscc}), gateway"
        f" {config.gateway_id}, {len(config.meters)} meter(s), {points} point(s)",
        highlight=False,
    )
    for note in site_notes(config):
        out.print(f"note: {note}", highlight=False, markup=False)
    if explain:
        types = collector_types()
        for meter in config.meters:
            out.print(f"meter {meter.id}", highlight=False, markup=False)
            for line in types[meter.protocol].explain(meter):
                out.print(f"  {line}", highlight=False, markup=False)


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
    setup_logging(verbose)
    site = check_site(config)  # what check-config calls an error stops the run here
    for note in site_notes(site):  # what check-config notes, in the service's log
        logging.getLogger("tanji").warning("%s: %s", config, note)
    if site.mqtt.plaintext_password:
        logging.getLogger("tanji").warning(
            "mqtt: the password goes in clear over mqtt:// to %s (allow_plaintext_password"
            " = true); use mqtts:// unless that network is trusted",
            site.mqtt.host,
        )
    from gateway.runtime.supervisor import Gateway, GatewayFailed
    from gateway.runtime.writer import describe_error
    from gateway.store.lock import StoreLock

    async def main() -> None:
        stop = stop_on_signals()
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
        run_async(main())
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
