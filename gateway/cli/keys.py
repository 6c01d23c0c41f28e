"""`tanji keys opcua|https`: the gateway's own OPC UA certificate and key, and its key and
certificate request for a platform that takes HTTPS with mutual TLS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from cloud_sync import create_client_request
from gateway.cli.common import (
    err,
    out,
)
from gateway.errors import EXIT_BAD_INPUT, TanjiError
from gateway.uscc import uscc_problem


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
    from collectors.opcua import create_application_certificate, load_certificate, thumbprint

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


def keys_https(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the key and the request")],
    gateway_id: Annotated[str, typer.Option(help="the gateway's id in site.toml (the CN)")],
    uscc: Annotated[str, typer.Option(help="the enterprise's unified social credit code (O)")],
) -> None:
    """Create the gateway's private key for a platform that takes HTTPS with mutual TLS, and a
    certificate signing request for the platform operator's CA; the key never leaves here.

    Example: tanji keys https --out /etc/tanji/https --gateway-id gw-01 --uscc 91320000MA1TANJ0D7
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", gateway_id):
        raise TanjiError(f"--gateway-id {gateway_id!r}: letters, digits, '_', '.', '-' only")
    problem = uscc_problem(uscc)
    if problem:
        raise TanjiError(f"--uscc {uscc!r}: {problem}")
    made = create_client_request(out_dir, gateway_id, uscc)
    out.print(f"private key  {made.key} (mode 0600)", highlight=False)
    out.print(f"request      {made.csr} ({made.subject})", highlight=False)
    out.print(
        "Send the request (not the key) to the platform operator; put the certificate they"
        " return beside the key and, in site.toml:\n"
        '  [platform]\n  transport = "https"\n  [https]\n'
        '  url = "https://<the platform>"\n'
        f'  cert_file = "{made.key.parent / "tanji-https.pem"}"   # the signed certificate\n'
        f'  key_file = "{made.key}"\n'
        '  ca_file = "<the CA that signs the platform\'s certificate>"   # if not a public CA\n'
        '  platform_ack_key = "<the platform\'s ack-signing public key, from its operator>"',
        highlight=False,
        markup=False,
    )
