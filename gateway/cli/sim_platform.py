"""`tanji sim platform`: the platform simulator (simulators.platform) receiving, checking,
storing and acking batches until Ctrl-C."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from gateway.cli.common import (
    err,
    run_async,
    setup_logging,
)
from gateway.config import problems_from
from gateway.errors import EXIT_BAD_INPUT


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

    from cloud_sync import MqttConfig

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
    setup_logging(verbose)
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
        run_async(receiver.run())
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
