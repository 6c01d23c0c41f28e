"""MQTT connection settings for the platform link: broker URL, TLS, client identity, credentials.

`mqtts://` means TLS 1.2 or newer with the server's certificate verified (against `ca_file`,
else the system's trust store) and its name checked; there is no switch to turn verification
off and no fallback to plaintext. A client certificate (`cert_file` + `key_file`) gives mutual
TLS. The password comes from a file or an environment variable, never from site.toml, and is
never logged; over plain `mqtt://` it is sent only to this machine's own broker unless
`allow_plaintext_password` says the network is trusted. The gateway and the platform
simulator connect through the same settings.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, field_validator, model_validator

from cloud_sync.acks import MAX_KEY_FILE_BYTES, AckKeys
from gateway.errors import TanjiFailure
from gateway.models import ConfigBool, ConfigFloat, Frozen, in_range

DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves the
    machine. Names are not resolved: any other name counts as the network."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TransportError(TanjiFailure):
    """The link cannot be set up as configured (unreadable key, missing password, ...)."""


class MqttConfig(Frozen):
    broker_url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: str = "tanji/v1"
    client_id: str | None = None
    ca_file: Path | None = Field(
        default=None, description="CA certificate(s) that sign the broker's; default: system"
    )
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    keepalive_s: Annotated[int, in_range(5, 3600)] = 20
    session_expiry_s: Annotated[int, in_range(0, 0xFFFFFFFF)] = 7 * 86400
    publish_timeout_s: ConfigFloat = Field(default=10.0, ge=0.01, le=600)
    batch_size: Annotated[int, in_range(1, 10000)] = 50
    ack_timeout_s: ConfigFloat = Field(default=30.0, ge=0.01, le=3600)
    max_in_flight: Annotated[int, in_range(1, 10000)] = 20
    backlog_rate: ConfigFloat = Field(
        default=20.0,
        ge=0,
        le=10000,
        description="backlog batches per second after an outage; 0: no limit",
    )
    compression: Literal["none", "gzip"] = "gzip"
    readings: ConfigBool = False
    readings_batch_size: Annotated[int, in_range(1, 100000)] = 2000
    allow_plaintext_password: ConfigBool = Field(
        default=False,
        description="send the password over plain mqtt:// to a host that is not this machine"
        " (anyone on the path can read it); `tanji run` warns at start",
    )
    platform_ack_key: Path | None = Field(
        default=None,
        description="the platform's public key(s) (PEM, ECDSA P-256) its acks are signed"
        " with; required unless the broker is on this machine",
    )

    @field_validator("broker_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(
                f"scheme must be mqtt:// or mqtts:// (TLS) (got {parts.scheme or 'none'!r})"
            )
        if not parts.hostname:
            raise ValueError("needs a host, e.g. mqtts://platform.example.cn:8883")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("port must be 1..65535") from None
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL: use username and password_file")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("must be non-empty, without wildcards or leading/trailing '/'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError(
                "ca_file/cert_file/key_file are given but broker_url is plaintext mqtt://;"
                " use mqtts:// (nothing is sent in plaintext when TLS was meant)"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        if self.password_file and self.password_env:
            raise ValueError("give password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        if self.plaintext_password and not self.allow_plaintext_password:
            field = "password_env" if self.password_env else "password_file"
            raise ValueError(
                f"{field}: the password would cross the network in clear (broker_url is plain"
                f" mqtt:// to {self.host}, not this machine); use mqtts://, or set"
                " allow_plaintext_password = true if that network is trusted"
            )
        return self

    @property
    def plaintext_password(self) -> bool:
        """A password goes over plain mqtt:// to a broker that is not on this machine."""
        has_password = bool(self.password_file or self.password_env)
        return has_password and not self.tls and not is_loopback(self.host)

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker_url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.broker_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker_url)
        return parts.port or DEFAULT_PORTS[parts.scheme]

    @property
    def dead_link_bound_s(self) -> float:
        """A silent link is noticed within this time: paho sends PINGREQ after `keepalive_s`
        without traffic and drops the link when nothing arrives for another `keepalive_s`
        (checked every second); an unanswered publish fails after `publish_timeout_s`."""
        return 2 * self.keepalive_s + 1.0

    def password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise TransportError(f"environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise TransportError(f"password_file {self.password_file}: {exc}") from None
        return None

    def ack_keys(self) -> AckKeys | None:
        """The platform's ack-verification keys from `platform_ack_key` (None when unset);
        TransportError naming the file when it cannot be read or holds no P-256 key."""
        if self.platform_ack_key is None:
            return None
        path = self.platform_ack_key
        try:
            with path.open("rb") as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
            if len(data) > MAX_KEY_FILE_BYTES:
                raise ValueError(f"is larger than {MAX_KEY_FILE_BYTES} bytes")
            return AckKeys.from_pem(data)
        except OSError as exc:
            raise TransportError(f"platform_ack_key {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise TransportError(f"platform_ack_key {path}: {exc}") from None

    def unsigned_acks_problem(self) -> str | None:
        """Why this link must not believe unsigned acks, or None: no `platform_ack_key`
        with a broker that is not on this machine (a gateway's site only; the platform
        simulator signs rather than verifies)."""
        if self.platform_ack_key is not None or is_loopback(self.host):
            return None
        return (
            f"is required: the broker {self.host} is not on this machine, and without the"
            " platform's public key anyone who can publish on the ack topic could mark"
            " batches delivered or dead-letter them (docs/platform-contract.md,"
            " Ack signatures)"
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"ca_file {self.ca_file}: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(
                    f"client certificate {self.cert_file} / key {self.key_file}: {exc}"
                ) from None
        return ctx

    def client_kwargs(self, client_id: str, will: aiomqtt.Will | None = None) -> dict[str, Any]:
        """Keyword arguments for `aiomqtt.Client` with a persistent session."""
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "identifier": client_id,
            "keepalive": self.keepalive_s,
            "timeout": self.publish_timeout_s,
            "username": self.username,
            "password": self.password(),
            "will": will,
            "tls_context": self.tls_context(),
            # small messages (acks, PUBACKs) go out at once: with Nagle's algorithm each
            # waited for the peer's delayed ACK, ~40 ms per batch round trip
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
            kwargs |= {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": False,
                "properties": props,
            }
        else:
            kwargs |= {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        return kwargs


def describe_error(exc: BaseException, config: MqttConfig) -> str:
    """A broker error in words an operator can act on (TLS problems name the certificate)."""
    text = str(exc)
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        where = f"against {config.ca_file}" if config.ca_file else "against the system CAs"
        return f"TLS: the broker's certificate failed verification {where}: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake with {config.host}:{config.port} failed: {cause.reason or cause}"
    return text
