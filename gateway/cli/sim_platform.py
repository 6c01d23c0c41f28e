"""`tanji sim platform`: the platform simulator (simulators.platform) receiving, checking,
storing and acking batches over MQTT and/or HTTPS (simulators.platform_https) until Ctrl-C."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from cloud_sync import MqttConfig, TransportError
from gateway.cli.common import err, run_async, setup_logging
from gateway.config import problems_from
from gateway.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:  # the simulators are imported when the command runs: `tanji` starts fast
    from cloud_sync import AckSigner
    from simulators.platform import PlatformReceiver
    from simulators.platform_https import HttpsSettings, PlatformHttps


Broker = Annotated[str, typer.Option(help="broker URL, mqtt:// or mqtts://")]
MqttOn = Annotated[
    bool, typer.Option("--mqtt/--no-mqtt", help="receive over MQTT (off: HTTPS only)")
]
Db = Annotated[Path, typer.Option(help="the platform's SQLite file")]
Dsn = Annotated[
    str | None, typer.Option(help="PostgreSQL instead of SQLite, e.g. postgresql://user@host/db")
]
Group = Annotated[
    str | None,
    typer.Option(
        help="consume through the shared subscription $share/GROUP/... so that several"
        " instances split the load"
    ),
]
ClientId = Annotated[
    str | None, typer.Option(help="MQTT client id, one per instance (default tanji-platform-sim)")
]
Prefix = Annotated[str, typer.Option(help="topic prefix (and the HTTPS path's)")]
Protocol = Annotated[str, typer.Option(help="MQTT protocol: 5 or 3.1.1")]
File = Annotated[Path | None, typer.Option()]
CaFile = Annotated[Path | None, typer.Option(help="CA of the broker's certificate")]
CertFile = Annotated[Path | None, typer.Option(help="client certificate")]
KeyFile = Annotated[Path | None, typer.Option(help="client certificate's key")]
HttpsPort = Annotated[
    int | None, typer.Option(min=0, max=65535, help="also take batches over HTTPS on this port")
]
HttpsHost = Annotated[str, typer.Option(help="address the HTTPS listener binds")]
HttpsCert = Annotated[Path | None, typer.Option(help="the HTTPS server's certificate")]
HttpsKey = Annotated[Path | None, typer.Option(help="the HTTPS server certificate's key")]
HttpsClientCa = Annotated[
    Path | None,
    typer.Option(help="the CA that signs the gateways' client certificates (required)"),
]
AckKey = Annotated[
    Path | None,
    typer.Option(
        help="the platform's ack signing key (PEM), made when missing, its public key written"
        " beside it as NAME.pub.pem; default platform-ack.key next to --db"
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def sim_platform(
    broker: Broker = "mqtt://127.0.0.1:1883",
    mqtt_on: MqttOn = True,
    db: Db = Path("platform.db"),
    dsn: Dsn = None,
    group: Group = None,
    client_id: ClientId = None,
    prefix: Prefix = "tanji/v1",
    protocol: Protocol = "5",
    ca_file: CaFile = None,
    cert_file: CertFile = None,
    key_file: KeyFile = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_file: File = None,
    https_port: HttpsPort = None,
    https_host: HttpsHost = "127.0.0.1",
    https_cert: HttpsCert = None,
    https_key: HttpsKey = None,
    https_client_ca: HttpsClientCa = None,
    ack_key: AckKey = None,
    verbose: Verbose = False,
) -> None:
    """Receive activity batches, validate them, store them and ack them (signed), until Ctrl-C.

    Example: tanji sim platform --broker mqtt://127.0.0.1:1883 --db /tmp/platform.db
    (gateways verify its acks with [mqtt] platform_ack_key = "/tmp/platform-ack.pub.pem")
    Over HTTPS with mutual TLS (docs/platform-contract.md, HTTPS binding):
    tanji sim platform --no-mqtt --https-port 8443 --https-cert server.pem --https-key
    server.key --https-client-ca gateways-ca.pem
    Two instances sharing the load, a database and the signing key:
    tanji sim platform --group platform --client-id p1 --dsn postgresql://platform@127.0.0.1/p
    --ack-key /etc/tanji-platform/ack.key
    """
    from simulators.platform import ack_signer

    mqtt = (
        _mqtt_link(broker, prefix, protocol, ca_file, cert_file, key_file, username, password_file)
        if mqtt_on
        else None
    )
    https = _https_settings(https_port, https_host, https_cert, https_key, https_client_ca, prefix)
    shown = _redacted(dsn) if dsn else str(db)
    problems = _option_problems(group, client_id, dsn, shown, ack_key, mqtt, https)
    key_path = (ack_key or db.parent / "platform-ack.key").absolute()
    signer = None
    if not problems:  # made only for a simulator that will run
        try:
            signer = ack_signer(key_path)
        except ValueError as exc:
            problems.append(str(exc))
    if problems or signer is None:
        _refuse(problems)
    setup_logging(verbose)
    _run_platform(dsn or db, shown, client_id, group, mqtt, https, signer, key_path)


def _run_platform(
    target: Path | str,
    shown: str,
    client_id: str | None,
    group: str | None,
    mqtt: MqttConfig | None,
    https: HttpsSettings | None,
    signer: AckSigner,
    key_path: Path,
) -> None:
    """One desk (store, signer) behind the MQTT receiver and the HTTPS listener, until Ctrl-C."""
    from simulators.platform import (
        SIMULATOR_ID,
        PlatformDesk,
        PlatformReceiver,
        PlatformStore,
        public_key_path,
    )
    from simulators.platform_https import PlatformHttps

    try:
        desk = PlatformDesk(PlatformStore(target, client_id or SIMULATOR_ID), signer)
    except Exception as exc:  # psycopg or sqlite3 cannot open the database
        text = str(exc).replace(str(target), shown)
        err.print(f"platform database {shown}: {text}", highlight=False, markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    receiver = None
    if mqtt is not None:
        receiver = PlatformReceiver(target, mqtt, client_id or SIMULATOR_ID, group, desk=desk)
        subscribed = ", ".join(receiver.subscriptions)
        err.print(f"platform simulator: {mqtt.broker_url}, {subscribed}, store {shown}")
    sections = " or ".join(s for s, on in (("[mqtt]", mqtt), ("[https]", https)) if on)
    err.print(
        f"acks signed with key {signer.key_id[:16]}…; gateways verify them with {sections}"
        f' platform_ack_key = "{public_key_path(key_path)}"',
        highlight=False,
        markup=False,
        soft_wrap=True,  # a path to copy, in one piece
    )
    try:
        run_async(_serve(receiver, None if https is None else PlatformHttps(desk, https)))
    except KeyboardInterrupt:
        c = desk.counters
        err.print(f"accepted {c.accepted}, duplicates {c.duplicates}, rejected {c.rejected}")


def _mqtt_link(
    broker: str,
    prefix: str,
    protocol: str,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    username: str | None,
    password_file: Path | None,
) -> MqttConfig:
    """The simulator's MQTT link from the options (bad ones end the command, exit 2)."""
    try:
        return MqttConfig(
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


def _https_settings(
    port: int | None,
    host: str,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
    prefix: str,
) -> HttpsSettings | None:
    """The HTTPS listener from the options, None without --https-port (a missing file ends
    the command, exit 2)."""
    from simulators.platform_https import HttpsSettings

    if port is None:
        given = [n for n, v in (("cert", cert), ("key", key), ("client-ca", client_ca)) if v]
        if given:
            _refuse([f"--https-{given[0]} needs --https-port"])
        return None
    missing = [n for n, v in (("cert", cert), ("key", key), ("client-ca", client_ca)) if not v]
    if missing or cert is None or key is None or client_ca is None:
        _refuse([f"--https-port needs --https-{m} FILE" for m in missing])
    return HttpsSettings(cert, key, client_ca, host=host, port=port, prefix=prefix)


def _option_problems(
    group: str | None,
    client_id: str | None,
    dsn: str | None,
    shown: str,
    ack_key: Path | None,
    mqtt: MqttConfig | None,
    https: HttpsSettings | None,
) -> list[str]:
    """What is wrong with the options together, and the files they name that cannot be read."""
    from simulators.platform_https import HttpsSetupError

    problems: list[str] = []
    if mqtt is None and https is None:
        problems.append("--no-mqtt needs --https-port: the simulator would receive nothing")
    if group is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", group):
        problems.append(f"--group {group!r}: letters, digits, '_', '.', '-' only")
    if group is not None and client_id is None:
        problems.append("--group needs a --client-id of its own for each instance")
    if dsn is not None and not dsn.startswith(("postgresql://", "postgres://")):
        problems.append(f"--dsn {shown!r}: expected postgresql://USER@HOST:PORT/DATABASE")
    if dsn is not None and ack_key is None:
        problems.append("--dsn needs --ack-key FILE: the signing key its instances share")
    try:
        if mqtt is not None:
            mqtt.tls_context()
            mqtt.password()
        if https is not None:
            https.tls_context()
    except (TransportError, HttpsSetupError) as exc:
        problems.append(str(exc))
    return problems


async def _serve(receiver: PlatformReceiver | None, https: PlatformHttps | None) -> None:
    """The MQTT receiver and the HTTPS listener, answering through one desk, until Ctrl-C."""
    server = None if https is None else await https.listen()
    if https is not None:
        err.print(
            f"HTTPS: POST {https.url}/{{uscc}}/{{gateway_id}}/activity|readings, client"
            f" certificates signed by {https.settings.client_ca}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        err.print(
            f'gateways reach it with [https] url = "{https.base_url}"',
            highlight=False,
            markup=False,
            soft_wrap=True,  # a line to copy, in one piece
        )
    async with asyncio.TaskGroup() as tg:
        if receiver is not None:
            tg.create_task(receiver.run())
        if server is not None:
            tg.create_task(server.serve_forever())


def _refuse(problems: list[str]) -> NoReturn:
    """Problems with the options, one a line; exit 2."""
    for problem in problems:
        err.print(problem, highlight=False, markup=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _redacted(dsn: str) -> str:
    """A connection URL without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()
