"""TLS for the links to the platform (MQTT, HTTPS): a section's certificate files
(`TlsFiles`), the context they make, and TLS failures in words that name the certificate.

Verification of the platform's end is never turned off and nothing falls back to plaintext:
the context verifies the peer's certificate (against `ca_file`, else the system's trust
store) and its name, and speaks TLS 1.2 or newer.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, model_validator

from cloud_sync.transport import TransportError
from gateway.models import ConfigPath, Frozen

# TLS alerts by which a server refuses the client's certificate (TLSV13_ALERT_CERTIFICATE_
# REQUIRED, TLSV1_ALERT_UNKNOWN_CA, SSLV3_ALERT_CERTIFICATE_EXPIRED, ...)
REFUSED_CERTIFICATE = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED")


class TlsFiles(Frozen):
    """The files of a link's TLS: the CA that signs the platform's end, and the gateway's
    client certificate and key (mutual TLS, both or neither)."""

    ca_file: ConfigPath | None = Field(
        default=None,
        description="CA certificate(s) that sign the platform's end (broker, server);"
        " default: the system's trust store",
    )
    cert_file: ConfigPath | None = Field(
        default=None, description="client certificate (mutual TLS)"
    )
    key_file: ConfigPath | None = Field(default=None, description="the client certificate's key")

    @model_validator(mode="after")
    def _paired(self) -> TlsFiles:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        return self

    def verified_context(self) -> ssl.SSLContext:
        """TLS 1.2 or newer, the peer's certificate and name verified, the client certificate
        presented when given; TransportError naming the field and the file that cannot be
        read or used."""
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is not None:
                try:
                    path.open("rb").close()
                except OSError as exc:
                    raise TransportError(f"{name} {path}: {reason(exc)}") from None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"ca_file {self.ca_file}: {reason(exc)}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(
                    f"cert_file {self.cert_file} / key_file {self.key_file}: {reason(exc)}"
                ) from None
        return ctx

    def tls_failure(self, exc: BaseException, peer: str, section: str) -> str | None:
        """What went wrong in TLS with `peer` ('broker host', 'platform https://...'), when
        `exc` comes from TLS (an SSLError anywhere in its causes), naming the certificate on
        whichever side was refused; None when it does not."""
        cause = ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            where = f"against {self.ca_file}" if self.ca_file else "against the system CAs"
            return (
                f"TLS: the certificate of the {peer} failed verification {where}:"
                f" {cause.verify_message}"
            )
        if cause is None:
            return None
        text = reason(cause)
        if "ALERT" in text and any(a in text for a in REFUSED_CERTIFICATE):
            mine = (
                f"this gateway's client certificate {self.cert_file}"
                if self.cert_file
                else f"this gateway: no client certificate is configured ({section}.cert_file)"
            )
            return f"TLS: the {peer} refused {mine} ({text})"
        return f"TLS handshake with the {peer} failed: {text}"


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The SSLError behind `exc` (itself, or along its causes and contexts), if any: client
    libraries wrap it (aiomqtt's MqttError, httpx's ConnectError)."""
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and not isinstance(cause, ssl.SSLError) and seen < 20:
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return cause if isinstance(cause, ssl.SSLError) else None


def reason(exc: BaseException) -> str:
    """A TLS or file error's own words: the SSL reason, the OS error text."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


__all__ = ["TlsFiles", "reason", "ssl_cause"]
