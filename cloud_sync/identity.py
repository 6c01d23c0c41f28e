"""The gateway's identity for a platform that takes mutual TLS: its own private key and a
certificate signing request (PKCS #10) for the platform operator's CA to sign. The key never
leaves the machine; the CSR names the gateway (CN) and its enterprise (O = the USCC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import TanjiError

KEY_FILE, CSR_FILE = "tanji-https.key.pem", "tanji-https.csr.pem"


class IdentityError(TanjiError):
    """The key and request cannot be made where asked (the message says why)."""


@dataclass(frozen=True)
class ClientRequest:
    key: Path  # the private key, PEM, readable by its owner only (0600)
    csr: Path  # the signing request, PEM, for the platform operator
    subject: str  # as the request names the gateway, e.g. CN=line-gw-01,O=91320...


def create_client_request(out_dir: Path, gateway_id: str, uscc: str) -> ClientRequest:
    """A new P-256 key and a CSR for a TLS client certificate (extended key usage clientAuth)
    with CN = `gateway_id`, O = `uscc`. Refuses to replace a key already in `out_dir`: the
    certificate the platform signed for it would no longer fit."""
    key_path, csr_path = out_dir / KEY_FILE, out_dir / CSR_FILE
    if key_path.exists():
        raise IdentityError(
            f"{key_path} exists: the platform's certificate is for that key; move it away"
            " first to make a new one"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, uscc),
        ]
    )
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem_key)
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise IdentityError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
    return ClientRequest(key_path, csr_path, subject.rfc4514_string())
