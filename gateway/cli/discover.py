"""`tanji discover modbus|opcua`: find devices and the meter profiles or variables that fit
them, and print a site.toml fragment. The finding is collectors' (collectors.modbus.discover,
collectors.opcua.discover); this module parses the options and prints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from gateway.cli.common import (
    err,
    exit_on_problems,
    out,
    print_problems,
    run_async,
    setup_logging,
)
from gateway.config import problems_from
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING

if TYPE_CHECKING:
    from collectors.modbus import UnitFinding
    from collectors.opcua import Candidate, OpcUaConnection

Endpoint = Annotated[str, typer.Argument(help="opc.tcp://host:port/path")]
SecurityPolicy = Annotated[str, typer.Option(help="None, Basic256Sha256 or Aes256_Sha256_RsaPss")]
SecurityMode = Annotated[str, typer.Option(help="None, Sign or SignAndEncrypt")]
Certificate = Annotated[Path | None, typer.Option(help="the gateway's certificate")]
PrivateKey = Annotated[Path | None, typer.Option(help="its private key")]
TrustDir = Annotated[Path | None, typer.Option(help="trusted server certificates")]
UaTimeout = Annotated[float, typer.Option(min=0.5, max=60, help="seconds per request")]
Limit = Annotated[int, typer.Option(min=1, max=1_000_000, help="nodes to visit")]

Target = Annotated[
    str | None, typer.Argument(help="HOST[:PORT] of a Modbus TCP device or device server")
]
Serial = Annotated[str | None, typer.Option(help="serial port instead, e.g. /dev/ttyUSB0")]
RtuOverTcp = Annotated[
    bool, typer.Option("--rtu-over-tcp", help="TARGET speaks RTU frames (device server)")
]
Units = Annotated[str, typer.Option(help="unit ids to try: 1-16, or 1,3,5")]
Baud = Annotated[int, typer.Option(help="serial: baud rate")]
Parity = Annotated[str, typer.Option(help="serial: N, E or O")]
ModbusTimeout = Annotated[float, typer.Option(min=0.05, max=10, help="seconds per request")]
Profiles = Annotated[list[str] | None, typer.Option(help="only try these profiles (repeatable)")]


def discover_opcua(
    endpoint: Endpoint,
    security_policy: SecurityPolicy = "None",
    security_mode: SecurityMode = "None",
    certificate: Certificate = None,
    private_key: PrivateKey = None,
    trust_dir: TrustDir = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_file: Annotated[Path | None, typer.Option()] = None,
    timeout: UaTimeout = 5.0,
    limit: Limit = 20000,
) -> None:
    """Browse an OPC UA server for energy and production variables (data type, engineering
    unit, a guessed quantity) and print a site.toml fragment; exit 1 when none is found.

    Example: tanji discover opcua opc.tcp://127.0.0.1:4840/tanji/plant
    """
    from collectors.opcua import OpcUaConnection, site_fragment

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
        print_problems([f"option {found}" for found in problems_from(exc)])
        raise typer.Exit(EXIT_BAD_INPUT) from None
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    candidates = _browse(endpoint, conn, limit)
    useful = [c for c in candidates if c.quantity is not None]
    err.print(_variables_table(endpoint, useful or candidates[:50]))
    if not useful:
        err.print(f"{len(candidates)} variables, none with an energy or power unit or a count")
        raise typer.Exit(EXIT_FINDING)
    print(site_fragment(endpoint, useful))


def _browse(endpoint: str, conn: OpcUaConnection, limit: int) -> list[Candidate]:
    """The server's variables, or exit: 1 when it cannot be browsed, 2 when the gateway's own
    key, certificate or password file cannot be read."""
    from asyncua.ua.uaerrors import UaError

    from collectors.opcua import SecurityMismatch, TrustError, browse, connect

    async def main() -> list[Candidate]:
        client = await connect(conn)
        try:
            return await browse(client, limit)
        finally:
            await client.disconnect()

    try:
        return run_async(main())
    except (TrustError, SecurityMismatch) as exc:
        err.print(f"{endpoint}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    except (OSError, TimeoutError, UaError) as exc:
        err.print(f"{endpoint}: cannot browse: {exc!r}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    except (ValueError, TypeError) as exc:  # an unreadable key, certificate or password file
        err.print(f"{endpoint}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _variables_table(endpoint: str, candidates: list[Candidate]) -> Table:
    table = Table(title=f"{endpoint}: variables")
    for col in ("node", "path", "type", "unit", "guess"):
        table.add_column(col)
    for c in candidates:
        guess = f"{c.quantity} ({c.kind})" if c.quantity else "-"
        table.add_row(c.node, c.path, c.data_type, c.unit or "-", guess)
    return table


def discover_modbus(
    target: Target = None,
    serial: Serial = None,
    rtu_over_tcp: RtuOverTcp = False,
    units: Units = "1-16",
    baud: Baud = 9600,
    parity: Parity = "E",
    timeout: ModbusTimeout = 0.5,
    profile: Profiles = None,
) -> None:
    """Scan unit ids, try the known meter profiles, print a site.toml fragment.

    Example: tanji discover modbus 127.0.0.1:5020 --units 1-4

    Example: tanji discover modbus --serial /dev/ttyUSB0 --baud 9600 --parity N
    """
    from collectors.modbus import RequestFailed, device_for_link, discover_units, site_fragment

    problems: list[str] = []
    unit_ids = _unit_ids(units, problems)
    problems += _target_problems(target, serial, profile or [])
    protocol = "modbus_rtu" if serial else "modbus_rtu_over_tcp" if rtu_over_tcp else "modbus_tcp"
    device = None
    if not problems:
        try:
            device = device_for_link(protocol, _connection(target, serial, baud, parity, timeout))
        except ValidationError as exc:
            problems += [f"{p.path.split('.')[-1]}: {p.message}" for p in problems_from(exc)]
    exit_on_problems(problems)
    assert device is not None  # no problems
    setup_logging(False)
    logging.getLogger("collectors").setLevel(logging.CRITICAL)  # refusals are expected here
    where = serial or target

    async def scan() -> list[UnitFinding]:
        with err.status(f"scanning {where}") as status:
            return await discover_units(
                device,
                unit_ids,
                profile,
                progress=lambda u: status.update(f"scanning {where}: unit {u}"),
            )

    try:
        findings = run_async(scan())
    except RequestFailed:
        err.print(f"cannot connect to {where}", highlight=False)
        raise typer.Exit(EXIT_FINDING) from None
    out.print(_units_table(f"Modbus devices on {where}", findings))
    fragment = site_fragment(device, findings)
    if not fragment:
        answered = any(f.answered for f in findings)
        err.print("no unit matched a known profile" if answered else "no units answered")
        raise typer.Exit(EXIT_FINDING)
    out.print(fragment, highlight=False, markup=False)


def _target_problems(target: str | None, serial: str | None, profiles: list[str]) -> list[str]:
    from collectors.modbus import ProfileError, load_profile

    problems = []
    if (target is None) == (serial is None):
        problems.append("give either TARGET (host[:port]) or --serial DEVICE")
    for name in profiles:
        try:
            load_profile(name)
        except ProfileError as exc:
            problems.append(f"--profile: {exc}")
    return problems


def _connection(
    target: str | None, serial: str | None, baud: int, parity: str, timeout: float
) -> dict[str, Any]:
    """The connection settings of the link to scan, as a site.toml holds them."""
    connection: dict[str, Any] = {"timeout_s": timeout, "retries": 0}
    if serial:
        connection.update(serial_port=serial, baudrate=baud, parity=parity.upper())
    elif target:
        host, _, port = target.rpartition(":") if ":" in target else (target, "", "502")
        # a port is a number to the configuration (which refuses "502"); text stays text
        connection.update(host=host, port=int(port) if port.isdigit() else port)
    return connection


def _units_table(title: str, findings: list[UnitFinding]) -> Table:
    table = Table(title=title)
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
    return table


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
