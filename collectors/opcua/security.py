"""OPC UA application security: the gateway's application instance certificate and the
explicit trust list of server certificates.

`create_application_certificate` writes a self-signed certificate as OPC 10000-6 §6.2.2 asks
(asyncua's generator: RSA 2048, SHA-256, the application URI and host name as subject
alternative names). A server is trusted only when its certificate (the very one, compared by
SHA-1 thumbprint as OPC UA shows it, or any certificate in the folder that issued it) lies in
the site's trust folder; otherwise the session is refused with an error naming the
certificate's thumbprint and subject, so the engineer can check it and copy it there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import TanjiFailure

if TYPE_CHECKING:
    from collectors.opcua.config import OpcUaConnection

CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class TrustError(TanjiFailure):
    """The server's certificate is not trusted (or not usable); the text says which and why."""


@dataclass(frozen=True)
class ApplicationCertificate:
    certificate: Path
    private_key: Path
    application_uri: str


def create_application_certificate(
    out_dir: Path,
    application_uri: str,
    name: str = "tanji gateway",
    days: int = 3650,
    stem: str = "tanji-gateway",
) -> ApplicationCertificate:
    """Write `<out_dir>/<stem>.der` and `<stem>.key.pem` (mode 0600)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    hostname = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {},
        [x509.UniformResourceIdentifier(application_uri), x509.DNSName(hostname)],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        days=days,
    )
    cert_path = out_dir / f"{stem}.der"
    key_path = out_dir / f"{stem}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable
    with os.fdopen(fd, "wb") as f:  # by others, not even for a moment
        f.write(cert_gen.dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    return ApplicationCertificate(cert_path, key_path, application_uri)


def load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def file_problems(conn: OpcUaConnection) -> list[tuple[str, str]]:
    """The connection's files that the gateway could not use: (field, problem) for every
    certificate, key, trust folder and password file that is missing, unreadable or not what
    it should be, so `check-config` and `run` say so before the first connect does."""
    problems: list[tuple[str, str]] = []

    def read(field: str, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            problems.append((field, f"cannot read {path}: {exc.strerror or exc}"))
            return None

    for field in ("certificate", "user_certificate"):
        path = getattr(conn, field)
        if path is not None and (data := read(field, path)) is not None:
            try:
                if b"-----BEGIN CERTIFICATE-----" in data:
                    x509.load_pem_x509_certificate(data)
                else:
                    x509.load_der_x509_certificate(data)
            except ValueError:
                problems.append((field, f"{path} is not an X.509 certificate (PEM or DER)"))
    for field in ("private_key", "user_private_key"):
        path = getattr(conn, field)
        if path is not None and (data := read(field, path)) is not None:
            try:
                serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError):
                problems.append((field, f"{path} is not a PEM private key without a passphrase"))
    if conn.trust_dir is not None and not Path(conn.trust_dir).is_dir():
        problems.append(("trust_dir", f"{conn.trust_dir} is not a folder"))
    if conn.password_file is not None:
        data = read("password_file", conn.password_file)
        if data is not None and not data.strip():
            problems.append(("password_file", f"{conn.password_file} is empty"))
    return problems


def application_uri_of(cert: x509.Certificate) -> str | None:
    """The URI in the certificate's subject alternative names (OPC UA's application URI)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate, hex: the thumbprint OPC UA tools show."""
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return f"thumbprint {thumbprint(cert)} ({cert.subject.rfc4514_string()})"


def check_trusted(server_der: bytes, trust_dir: Path, now: dt.datetime | None = None) -> None:
    """Raise TrustError unless the server certificate (DER) is in `trust_dir`, or was issued
    by a certificate there, and is within its validity period."""
    cert = x509.load_der_x509_certificate(server_der)
    when = now or dt.datetime.now(dt.UTC)
    if not trust_dir.is_dir():
        raise TrustError(f"trust folder {trust_dir} does not exist (server certificate"
                         f" {describe(cert)})")  # fmt: skip
    trusted = []
    for path in sorted(trust_dir.iterdir()):
        if path.suffix.lower() in CERT_SUFFIXES:
            try:
                trusted.append(load_certificate(path))
            except (ValueError, OSError):
                continue
    der = cert.public_bytes(serialization.Encoding.DER)
    known = any(t.public_bytes(serialization.Encoding.DER) == der for t in trusted) or any(
        _issued_by(cert, t) for t in trusted
    )
    if not known:
        raise TrustError(
            f"the server's certificate is not trusted: {describe(cert)}; if it is the right"
            f" server, copy its certificate into {trust_dir}"
        )
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        valid = f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}"
        raise TrustError(
            f"the server's certificate is outside its validity ({valid}): {describe(cert)}"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject or cert.signature_hash_algorithm is None:
        return False
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    except InvalidSignature:
        return False
    return True
