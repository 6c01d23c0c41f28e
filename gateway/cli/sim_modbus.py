"""`tanji sim modbus`: the simulated meter fleet (simulators.modbus_fleet) served until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import (
    err,
    out,
    run_async,
    setup_logging,
)
from gateway.errors import EXIT_BAD_INPUT


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
    setup_logging(False)

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
        run_async(main())
