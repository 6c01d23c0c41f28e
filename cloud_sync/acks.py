"""Platform acks: signed by the platform, read by the gateway off the broker.

Anything can arrive on an ack topic (a retained leftover, a 10 MB blob, JSON with a
5000-digit number or a lone surrogate, a forged verdict). `read_ack` turns each message into
an `Ack` or an `AckRefused` naming why, and never raises anything else; nothing here touches
the outbox. With the platform's public key(s) (`AckKeys`) only acks signed by the platform
for this gateway are believed: ECDSA P-256 / SHA-256 over the RFC 8785 canonical JSON of the
ack without its `signature` (docs/platform-contract.md, "Ack signatures"). `AckSigner` is
the platform's side, used by the platform simulator.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud_sync.contract import (
    ACK_SCHEMA_ID,
    Ack,
    AckStatus,
    ContractError,
    check_text,
    load_json,
    validate,
)
from gateway.errors import TanjiError
from gateway.evidence import canonical_json

MAX_ACK_BYTES = 16 * 1024  # docs/platform-contract.md: a larger message is dropped unread
EXCERPT_BYTES = 200  # of a dropped message, in the log
SIGNED_ACK_SCHEMA_ID = "tanji.ack/2"
SIGNED_ACK_SCHEMA_FILE = "ack.v2.json"
MAX_KEY_FILE_BYTES = 1024 * 1024
_INT64 = 2**63 - 1
_PEM_PUBLIC_KEY = b"-----BEGIN PUBLIC KEY-----"


class AckRefused(TanjiError):
    """A message on the ack topic that must not settle anything. `kind` says which rule it
    broke (a counter per kind in the gateway's status), `detail` says how."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 (hex) of the key's DER SubjectPublicKeyInfo: names the key in a signed ack."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def signed_body(message: dict[str, Any]) -> bytes:
    """The bytes a signature covers: RFC 8785 canonical JSON of the ack without `signature`."""
    return canonical_json({k: v for k, v in message.items() if k != "signature"})


class AckKeys:
    """The platform's ack-verification keys (ECDSA P-256 public keys), by key id. Several
    keys let a platform roll its key over: gateways get the new one before it signs."""

    def __init__(self, keys: Sequence[ec.EllipticCurvePublicKey]) -> None:
        if not keys:
            raise ValueError("no public key")
        self.keys = {key_id(k): k for k in keys}

    @classmethod
    def from_pem(cls, data: bytes) -> AckKeys:
        """Every `PUBLIC KEY` block of a PEM file; ValueError naming what is wrong."""
        blocks = data.split(_PEM_PUBLIC_KEY)[1:]
        if not blocks:
            raise ValueError("holds no PEM public key (-----BEGIN PUBLIC KEY-----)")
        keys = []
        for i, block in enumerate(blocks, 1):
            try:
                key = serialization.load_pem_public_key(_PEM_PUBLIC_KEY + block)
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise ValueError(f"public key {i} cannot be read: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                key.curve, ec.SECP256R1
            ):
                raise ValueError(f"public key {i} is not an ECDSA P-256 (secp256r1) key")
            keys.append(key)
        return cls(keys)

    def verify(self, message: dict[str, Any]) -> None:
        """AckRefused (`unauthenticated`) unless `message` (a checked version 2 ack) carries a
        valid signature by one of these keys."""
        key = self.keys.get(message["key_id"])
        if key is None:
            known = ", ".join(k[:16] for k in self.keys)
            raise AckRefused(
                "unauthenticated",
                f"signed with key {message['key_id'][:16]}…, not a platform key configured"
                f" here ({known}…)",
            )
        try:
            signature = base64.b64decode(message["signature"], validate=True)
            key.verify(signature, signed_body(message), ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # binascii.Error is a ValueError
            raise AckRefused(
                "unauthenticated", "the signature does not match the ack (forged or altered)"
            ) from None


class AckSigner:
    """The platform's signing key (ECDSA P-256): signs acks as `tanji.ack/2` messages."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the ack signing key must be ECDSA P-256 (secp256r1)")
        self.key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def generate(cls) -> AckSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> AckSigner:
        """ValueError naming what is wrong."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"cannot be read as an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("is not an ECDSA private key")
        return cls(key)

    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def message(self, ack: Ack, uscc: str, gateway_id: str, issued_ns: int) -> dict[str, Any]:
        """The signed ack for gateway (`uscc`, `gateway_id`); ContractError when the contract
        cannot carry it (e.g. a topic that names no gateway)."""
        body: dict[str, Any] = {
            "schema": SIGNED_ACK_SCHEMA_ID,
            "uscc": uscc,
            "gateway_id": gateway_id,
            "batch_id": ack.batch_id,
            "status": ack.status.value,
            "issued_ns": str(issued_ns),
            "key_id": self.key_id,
        }
        if ack.reason is not None:
            body["reason"] = ack.reason
        check_text(body)  # canonical JSON takes Unicode text only
        der = self.key.sign(signed_body(body), ec.ECDSA(hashes.SHA256()))
        body["signature"] = base64.b64encode(der).decode("ascii")
        validate(SIGNED_ACK_SCHEMA_FILE, body)
        return body

    def sign(self, ack: Ack, uscc: str, gateway_id: str, issued_ns: int) -> bytes:
        """The payload to publish on the gateway's ack topic."""
        return json.dumps(self.message(ack, uscc, gateway_id, issued_ns)).encode()


def read_ack(payload: bytes, uscc: str, gateway_id: str, keys: AckKeys | None = None) -> Ack:
    """The ack in `payload`, published for gateway (`uscc`, `gateway_id`); AckRefused on
    anything else. With `keys`, only a signed ack (version 2) with a valid signature by one
    of them; without, unsigned (version 1) and signed acks alike, signatures unchecked."""
    if len(payload) > MAX_ACK_BYTES:
        raise AckRefused("oversized", f"{len(payload)} bytes, more than {MAX_ACK_BYTES}")
    try:
        message = load_json(payload, "the message")
        schema = message.get("schema") if isinstance(message, dict) else None
        files = {ACK_SCHEMA_ID: "ack.v1.json", SIGNED_ACK_SCHEMA_ID: SIGNED_ACK_SCHEMA_FILE}
        if not isinstance(schema, str) or schema not in files:
            shown = schema if isinstance(schema, str) else type(schema).__name__
            raise ContractError(f"schema: {shown!r} is not an ack this gateway takes")
        validate(files[schema], message)
        check_text(message)
    except ContractError as exc:
        raise AckRefused("malformed", str(exc)) from None
    if schema == ACK_SCHEMA_ID:
        if keys is not None:
            raise AckRefused(
                "unauthenticated",
                "an unsigned ack (tanji.ack/1); this gateway takes only acks signed with the"
                " platform's key (platform_ack_key)",
            )
        return Ack(message["batch_id"], AckStatus(message["status"]), message.get("reason"))
    if keys is not None:
        keys.verify(message)
    if (message["uscc"], message["gateway_id"]) != (uscc, gateway_id):
        raise AckRefused(
            "misaddressed",
            f"an ack for gateway {message['uscc']}/{message['gateway_id']}, not this one",
        )
    issued_ns = int(message["issued_ns"])
    if issued_ns > _INT64:
        raise AckRefused("malformed", f"issued_ns: {issued_ns} is beyond 2^63 - 1")
    return Ack(message["batch_id"], AckStatus(message["status"]), message.get("reason"), issued_ns)


def excerpt(payload: bytes, limit: int = EXCERPT_BYTES) -> str:
    """The start of a message for a log line: escaped (one line, ASCII), at most `limit`
    bytes of it, with its full size when cut."""
    shown = repr(bytes(payload[:limit]))
    return shown if len(payload) <= limit else f"{shown}… ({len(payload)} bytes)"


def one_line(text: str, limit: int = 300) -> str:
    """Text for a log line: at most `limit` characters, line breaks, control characters and
    surrogates escaped (a message cannot forge log lines)."""
    return repr(text[:limit])[1:-1] + ("…" if len(text) > limit else "")
