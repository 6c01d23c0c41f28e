"""`tanji sim modbus`: the simulated meter fleet (simulators.modbus_fleet) served until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import (
    err,
    exit_on_problems,
    out,
    run_async,
    scenario_option,
    setup_logging,
)
from gateway.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from simulators.modbus_fleet import MeterFleet, Scenario

Meters = Annotated[int, typer.Option(min=1, max=5000, help="number of meters")]
BasePort = Annotated[
    int, typer.Option(min=1, max=65535, help="TCP port of the first link; the rest follow")
]
Host = Annotated[str, typer.Option(help="address to bind")]
Profile = Annotated[
    str, typer.Option(help="register map to serve (see collectors/modbus/profiles)")
]
Transport = Annotated[str, typer.Option(help="tcp | rtu-over-tcp | rtu (virtual serial lines)")]
UnitsPerLink = Annotated[
    int, typer.Option(min=1, max=247, help="meters per port or serial line (unit ids 1..n)")
]
Baud = Annotated[int, typer.Option(min=1200, max=115200, help="rtu: line speed")]
ScenarioFile = Annotated[
    Path | None, typer.Option(help="TOML file of faults to replay (docs/simulators.md)")
]
Journal = Annotated[
    Path | None,
    typer.Option(
        help="write the start time and each fault as it happens to this file (JSON lines),"
        " so every counter at any instant can be known afterwards (FleetJournal)"
    ),
]


def sim_modbus(
    meters: Meters = 3,
    base_port: BasePort = 5020,
    host: Host = "127.0.0.1",
    profile: Profile = "tanji-sim",
    transport: Transport = "tcp",
    units_per_link: UnitsPerLink = 1,
    baud: Baud = 9600,
    scenario: ScenarioFile = None,
    journal: Journal = None,
) -> None:
    """Serve simulated energy meters over Modbus until Ctrl-C.

    Example: tanji sim modbus --meters 3 --base-port 5020

    Read it with any Modbus client, e.g. the kWh counter of the first meter (register 1 in
    mbpoll's 1-based numbering, big-endian int32, x 0.01 kWh):
    mbpoll -1 -a 1 -r 1 -c 2 -t 4:int -B -p 5020 127.0.0.1
    """
    from simulators.modbus_fleet import NOT_OVER_MODBUS, MeterFleet

    problems = _option_problems(meters, base_port, profile, transport, units_per_link)
    plan = scenario_option(
        scenario,
        NOT_OVER_MODBUS,
        "{faults} is for the OPC UA plant (tanji sim opcua): the simulated meters make no products",
        problems,
    )
    exit_on_problems(problems)
    setup_logging(False)
    fleet = MeterFleet(
        meters,
        base_port,
        host,
        profile=profile,
        transport=transport,  # type: ignore[arg-type]  # checked above
        units_per_link=units_per_link,
        baudrate=baud,
        journal=journal,
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_async(_serve(fleet, plan, profile))


def _option_problems(
    meters: int, base_port: int, profile: str, transport: str, units_per_link: int
) -> list[str]:
    from collectors.modbus import ProfileError, load_profile
    from simulators.modbus_fleet import TRANSPORTS

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
    return problems


async def _serve(fleet: MeterFleet, plan: Scenario | None, profile: str) -> None:
    try:
        await fleet.start()
        if plan is not None:
            fleet.play(plan)
    except (OSError, RuntimeError, ValueError) as exc:
        err.print(f"cannot start the simulator: {exc}", highlight=False, markup=False)
        await fleet.stop()
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for link in range(fleet.links):
        first = link * fleet.units_per_link
        last = min(len(fleet.meters), first + fleet.units_per_link) - 1
        where = (
            fleet.serial_port_of(first)
            if fleet.transport == "rtu"
            else f"{fleet.host}:{fleet.port_of(first)}"
        )
        out.print(
            f"{fleet.transport} {where}: unit id(s) {fleet.unit_of(first)}..{fleet.unit_of(last)}"
            f" ({profile})",
            highlight=False,
        )
    err.print(f"serving {len(fleet.meters)} meter(s) on {fleet.links} link(s); Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.stop()
