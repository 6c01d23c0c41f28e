"""Configuration of OPC UA devices: the server endpoint and its security, and which nodes hold
which points.

Nodes are addressed by namespace URI and identifier (`nsu=urn:...;s=Line1.Meter.Energy`),
never by namespace index: a server may renumber its namespaces when it restarts, and an index
would then silently name another node. Validated by pydantic; knows nothing of I/O.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from gateway.models import (
    SCALE_LIMIT,
    VALUE_LIMIT,
    ConfigFileName,
    ConfigFloat,
    ConnectionSpec,
    DeviceSpec,
    PointKind,
    PointSpec,
    float_step,
    in_range,
    scale_problem,
)

_NODE = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[sigb])=(?P<id>.+)$", re.DOTALL)
MANTISSA_BITS = {"float": 23, "double": 52}


def parse_node(text: str) -> tuple[str, str, str]:
    """(namespace URI, identifier type s|i|g|b, identifier) of `nsu=URI;s=ID`; ValueError
    says what is expected."""
    if text.startswith("ns=") or text.startswith(("s=", "i=", "g=", "b=")):
        raise ValueError(
            f"{text!r} names a namespace by index (or none); write the namespace URI,"
            " nsu=<uri>;s=<id>: indices may change when the server restarts"
        )
    m = _NODE.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not like nsu=<namespace uri>;s=<identifier>")
    kind, ident = m["kind"], m["id"]
    if kind == "i" and not (ident.isdigit() and int(ident) < 2**32):
        raise ValueError(f"{text!r}: a numeric identifier (i=) is 0..4294967295")
    if kind == "g":
        try:
            uuid.UUID(ident)
        except ValueError:
            raise ValueError(
                f"{text!r}: a GUID identifier (g=) is like 72962B91-FA75-..."
            ) from None
    if kind == "b" and not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", ident):
        raise ValueError(f"{text!r}: an opaque identifier (b=) is written as hex bytes")
    return m["uri"], kind, ident


class OpcUaConnection(ConnectionSpec):
    """One OPC UA server. `poll_interval_s` is the subscription's publishing interval and the
    period of polled points."""

    endpoint: str = Field(description="opc.tcp://host:port/path")
    security_policy: Literal["None", "Basic256Sha256", "Aes256_Sha256_RsaPss"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: ConfigFileName | None = Field(
        default=None,
        description="the gateway's application instance certificate (tanji keys opcua)",
    )
    private_key: ConfigFileName | None = None
    trust_dir: ConfigFileName | None = Field(
        default=None, description="folder of trusted server certificates (or their issuers)"
    )
    username: str | None = None
    password_file: ConfigFileName | None = None
    user_certificate: ConfigFileName | None = Field(
        default=None, description="log in with an X.509 user certificate instead of a password"
    )
    user_private_key: ConfigFileName | None = None
    backoff_initial_s: ConfigFloat = Field(default=1.0, ge=0.01, le=3600)
    backoff_max_s: ConfigFloat = Field(default=60.0, ge=0.01, le=3600)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "opc.tcp" or not parts.hostname:
            raise ValueError("must be like opc.tcp://host:4840/path")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("port must be 1..65535") from None
        if parts.username or parts.password:
            raise ValueError("put no credentials in the endpoint: use username, password_file")
        return v

    @model_validator(mode="after")
    def _security(self) -> OpcUaConnection:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                "security_policy and security_mode are both None or neither"
                f" (got {self.security_policy} / {self.security_mode})"
            )
        if self.password_file and not self.username:
            raise ValueError("a password_file needs a username")
        if self.username and self.security_policy == "None":
            raise ValueError(
                "a username login needs security_policy and security_mode: over a None channel"
                " the server is not checked and the password may go in clear"
            )
        if self.security_policy != "None":
            missing = [
                f for f in ("certificate", "private_key", "trust_dir") if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(
                    f"security_policy {self.security_policy} needs {', '.join(missing)}"
                    " (create the certificate with `tanji keys opcua`)"
                )
        if (self.user_certificate is None) != (self.user_private_key is None):
            raise ValueError("a user certificate needs user_certificate and user_private_key")
        if self.user_certificate and self.username:
            raise ValueError("log in with a username or a user certificate, not both")
        return self


class OpcUaPoint(PointSpec):
    node: str = Field(description="nsu=<namespace uri>;s=<identifier> (or i=, g=, b=)")
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_interval_ms: ConfigFloat | None = Field(
        default=None, ge=0, le=86_400_000, description="default: the device's poll interval"
    )
    queue_size: Annotated[int, in_range(1, 1000)] = 10
    deadband: Decimal | None = Field(
        default=None,
        ge=0,
        le=VALUE_LIMIT,
        description="absolute deadband: smaller changes are not reported",
    )
    data_type: Literal["double", "float", "integer"] = Field(
        default="double", description="the variable's type, for its resolution"
    )
    scale: Decimal = Field(default=Decimal(1), ge=-SCALE_LIMIT, le=SCALE_LIMIT)

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        parse_node(v)
        return v

    @model_validator(mode="after")
    def _counter_deadband(self) -> OpcUaPoint:
        problem = scale_problem(self.scale, self.kind)
        if problem:
            raise ValueError(problem)
        if self.deadband is not None and self.kind is PointKind.COUNTER and self.deadband > 0:
            raise ValueError("a counter takes no deadband: every step of it is energy")
        if self.kind is PointKind.LABEL and (self.deadband is not None or self.scale != 1):
            raise ValueError("a label point is text: it takes no deadband or scale")
        return self

    def resolution(self, value: Decimal) -> Decimal | None:
        """The variable's step at `value`: `scale` for integers, the spacing of representable
        floats there for float and double."""
        bits = MANTISSA_BITS.get(self.data_type)
        if bits is None:
            return abs(self.scale)
        return float_step(float(value / self.scale), bits) * abs(self.scale)


class OpcUaDevice(DeviceSpec):
    protocol: Literal["opcua"] = "opcua"
    connection: OpcUaConnection
    points: tuple[OpcUaPoint, ...] = Field(min_length=1)
