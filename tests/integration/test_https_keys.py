"""`tanji keys https` (the gateway's key and certificate request for a platform with mutual
TLS) and `tanji sim pki` (a throwaway PKI for trials): the files they make carry a real
mutual-TLS handshake on loopback, and a second key is never made over the first."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from typer.testing import CliRunner

from gateway.cli import app
from simulators.pki import CertificateAuthority

USCC = "91320000MA1TANJ0D7"


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Connect over loopback with mutual TLS; the peer certificate's subject as the server
    saw it, or the error the client got."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = writer.get_extra_info("peercert")
        seen.append(str(cert["subject"]) if cert else "none")
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        answer = await reader.read()
        writer.close()
        # TLS 1.3: a client refused its certificate finds out on its first read
        return seen[0] if answer == b"ok" else "refused: closed without an answer"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc}"
    finally:
        srv.close()


def _server(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    return ctx


def _client(ca: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def test_sim_pki_makes_a_working_mutual_tls_pair(tmp_path: Path):
    out = tmp_path / "pki"
    done = CliRunner().invoke(app, ["sim", "pki", "--out", str(out), "--gateway-id", "gw-7"])
    assert done.exit_code == 0, done.output
    ca, server, client = out / "tanji-trial-CA.pem", out / "platform", out / "gw-7"
    assert f'cert_file = "{client}.pem"' in done.output  # the section to paste names them
    assert f'platform_ack_key = "{out / "platform-ack.pub.pem"}"' in done.output
    assert (client.with_suffix(".key").stat().st_mode & 0o777) == 0o600
    srv = _server(server.with_suffix(".pem"), server.with_suffix(".key"), ca)
    mutual = _client(ca, client.with_suffix(".pem"), client.with_suffix(".key"))
    assert "gw-7" in asyncio.run(_handshake(srv, mutual))
    assert asyncio.run(_handshake(srv, _client(ca, None, None))).startswith("refused")
    again = CliRunner().invoke(app, ["sim", "pki", "--out", str(out)])
    assert again.exit_code == 2
    assert "not empty" in again.output


def test_keys_https_request_signed_by_the_platform_ca_carries_mutual_tls(tmp_path: Path):
    out = tmp_path / "own"
    args = ["keys", "https", "--out", str(out), "--gateway-id", "gw-7", "--uscc", USCC]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    key, csr_path = out / "tanji-https.key.pem", out / "tanji-https.csr.pem"
    assert (key.stat().st_mode & 0o777) == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == f"O={USCC},CN=gw-7"
    # the platform operator's CA signs the request; the gateway's key then fits the cert
    platform_ca = CertificateAuthority(tmp_path / "platform-ca", "platform CA")
    server = platform_ca.issue("platform", server=True)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(platform_ca.name)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(platform_ca.key, hashes.SHA256())
    )
    cert_path = out / "tanji-https.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    srv = _server(server.cert, server.key, platform_ca.cert_path)
    client = _client(platform_ca.cert_path, cert_path, key)
    assert "gw-7" in asyncio.run(_handshake(srv, client))
    # a second run would orphan the signed certificate: refused, the key untouched
    before = key.read_bytes()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert "exists" in again.output
    assert key.read_bytes() == before


def test_keys_https_names_a_bad_option(tmp_path: Path):
    base = ["keys", "https", "--out", str(tmp_path / "k")]
    bad_uscc = CliRunner().invoke(app, [*base, "--gateway-id", "gw", "--uscc", "123"])
    assert bad_uscc.exit_code == 2
    assert "--uscc '123': must be 18 characters" in bad_uscc.output
    bad_id = CliRunner().invoke(app, [*base, "--gateway-id", "gw 1", "--uscc", USCC])
    assert bad_id.exit_code == 2
    assert "--gateway-id 'gw 1'" in bad_id.output
    assert not (tmp_path / "k").exists()
