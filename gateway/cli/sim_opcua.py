"""`tanji sim opcua`: the simulated plant (simulators.opcua_plant) served until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    setup_logging(False)
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
        run_async(main())
