"""`tanji sim pki`: a throwaway PKI for trying the HTTPS link on this machine (a CA, the
platform simulator's server certificate for 127.0.0.1, the gateway's client certificate).
Never for a real deployment: there the platform's CA signs `tanji keys https`' request."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import out
from gateway.errors import TanjiError


def sim_pki(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the certificates and keys")],
    gateway_id: Annotated[str, typer.Option(help="the gateway's id (its certificate's CN)")] = (
        "demo-gw"
    ),
) -> None:
    """Make a throwaway CA with a server certificate for the platform simulator (127.0.0.1,
    localhost) and a client certificate for the gateway, valid 30 days, for trials of the
    HTTPS link; print the options and the site.toml section that use them.

    Example: tanji sim pki --out /tmp/tanji-pki --gateway-id line-gw-01
    """
    from simulators.pki import CertificateAuthority
    from simulators.platform import public_key_path

    if out_dir.exists() and any(out_dir.iterdir()):
        raise TanjiError(f"--out {out_dir}: not empty; name a new folder for a new PKI")
    try:
        ca = CertificateAuthority(out_dir, "tanji trial CA")
        server = ca.issue("platform", server=True)
        client = ca.issue(gateway_id, server=False)
    except OSError as exc:
        raise TanjiError(f"--out {out_dir}: cannot write: {exc.strerror or exc}") from None
    ack_key = out_dir / "platform-ack.key"  # the platform simulator makes it on its first start
    out.print(
        f"CA {ca.cert_path}\nplatform simulator: {server.cert} {server.key}\n"
        f"gateway: {client.cert} {client.key}\n\n"
        f"tanji sim platform --no-mqtt --db {out_dir / 'platform.db'} --ack-key {ack_key}"
        f" --https-port 8443 --https-cert {server.cert} --https-key {server.key}"
        f" --https-client-ca {ca.cert_path}\n\n"
        f'in site.toml (gateway_id = "{gateway_id}", the name in its certificate):\n'
        '[platform]\ntransport = "https"\n[https]\nurl = "https://127.0.0.1:8443"\n'
        f'ca_file = "{ca.cert_path}"\ncert_file = "{client.cert}"\nkey_file = "{client.key}"\n'
        f'platform_ack_key = "{public_key_path(ack_key)}"',
        highlight=False,
        markup=False,
    )
