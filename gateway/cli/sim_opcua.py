"""`tanji sim opcua`: the simulated plant (simulators.opcua_plant) served until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    from simulators.modbus_fleet import Scenario
    from simulators.opcua_plant import PlantSecurity, PlantServer

Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port of the server")]
Host = Annotated[str, typer.Option(help="address to bind")]
FillerNamespaces = Annotated[
    int,
    typer.Option(
        min=0,
        max=100,
        help="namespaces registered before the plant's, so its index changes from one"
        " start to the next (clients must address nodes by namespace URI)",
    ),
]
Pki = Annotated[
    Path | None,
    typer.Option(
        help="secure the server: its certificate goes here, and it offers Basic256Sha256"
        " and Aes256_Sha256_RsaPss (Sign, SignAndEncrypt) beside None"
    ),
]
User = Annotated[str | None, typer.Option(help="a user name that may log in")]
PasswordFile = Annotated[Path | None, typer.Option(help="that user's password")]
UserCertificates = Annotated[
    list[Path] | None, typer.Option(help="a certificate that may log in (repeatable)")
]
ScenarioFile = Annotated[
    Path | None,
    typer.Option(
        help="faults and product changeovers to replay, the Modbus simulator's TOML"
        " (meter = line index)"
    ),
]
MaxPerRequest = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="advertise and enforce MaxNodesPerRead and MaxMonitoredItemsPerCall (larger"
        " requests fail with BadTooManyOperations, as on servers that limit them)",
    ),
]
PLANT_PATHS = (
    "Meter.ActiveEnergyImport",
    "Meter.ActivePower",
    "Production.UnitsProduced",
    "Production.ProductCode",
)


def sim_opcua(
    port: Port = 4840,
    host: Host = "127.0.0.1",
    filler_namespaces: FillerNamespaces = 0,
    pki: Pki = None,
    user: User = None,
    password_file: PasswordFile = None,
    user_certificate: UserCertificates = None,
    scenario: ScenarioFile = None,
    max_per_request: MaxPerRequest = None,
) -> None:
    """Serve a simulated plant over OPC UA until Ctrl-C: lines with an energy meter (kWh
    counter, kW) and production data (units made, product code, production order).

    Example: tanji sim opcua --port 4840, then in site.toml a point with
    node = "nsu=urn:tanji:sim:plant;s=Line1.Meter.ActiveEnergyImport".
    Secured: tanji sim opcua --pki /tmp/plant-pki --user operator --password-file pw.txt
    """
    from simulators.opcua_plant import NOT_OVER_OPCUA, PlantServer

    problems: list[str] = []
    plan = scenario_option(
        scenario,
        NOT_OVER_OPCUA,
        "{faults} is not simulated over OPC UA"
        " (silent, exception, busy, frozen, replaced, noise, clear, changeover are)",
        problems,
    )
    security = _security(pki, user, password_file, user_certificate or [], problems)
    exit_on_problems(problems)
    setup_logging(False)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)  # our own message says it
    server = PlantServer(
        host,
        port,
        filler_namespaces=filler_namespaces,
        security=security,
        max_per_call=max_per_request,
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_async(_serve(server, plan))


def _security(
    pki: Path | None,
    user: str | None,
    password_file: Path | None,
    user_certificates: list[Path],
    problems: list[str],
) -> PlantSecurity | None:
    """The plant's security from the options, or None for an unsecured plant; what is wrong
    with them goes to `problems`."""
    from collectors.opcua import load_certificate
    from simulators.opcua_plant import PlantSecurity

    if (user is None) != (password_file is None):
        problems.append("--user and --password-file go together")
    if (user or user_certificates) and pki is None:
        problems.append("users need a secured server: give --pki DIR")
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"--password-file {password_file}: {exc}")
    for cert in user_certificates:
        try:
            load_certificate(cert)
        except (OSError, ValueError) as exc:
            problems.append(f"--user-certificate {cert}: not a certificate ({exc})")
    if pki is None:
        return None
    return PlantSecurity(
        pki,
        users=((user, password),) if user and password is not None else (),
        user_certificates=tuple(user_certificates),
    )


async def _serve(server: PlantServer, plan: Scenario | None) -> None:
    from collectors.opcua import load_certificate, thumbprint
    from simulators.opcua_plant import PLANT_NS

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
        for path in PLANT_PATHS:
            out.print(f"  nsu={PLANT_NS};s={line.name}.{path}", highlight=False)
    err.print("serving the simulated plant; Ctrl-C stops")
    try:
        await asyncio.Event().wait()
    finally:
        await plant.__aexit__(None, None, None)
