"""Platform acks as the gateway reads them off the broker: size-capped, decoded, checked
against the contract, addressed to this gateway.

Anything can arrive on an ack topic (a retained leftover, a 10 MB blob, JSON with a
5000-digit number or a lone surrogate). `read_ack` turns each message into an `Ack` or an
`AckRefused` naming why, and never raises anything else; nothing here touches the outbox.
"""

from __future__ import annotations

from typing import Any

from cloud_sync.contract import (
    ACK_SCHEMA_ID,
    Ack,
    AckStatus,
    ContractError,
    check_text,
    load_json,
    validate,
)

MAX_ACK_BYTES = 16 * 1024  # docs/platform-contract.md: a larger message is dropped unread
EXCERPT_BYTES = 200  # of a dropped message, in the log


class AckRefused(Exception):
    """A message on the ack topic that must not settle anything. `kind` says which rule it
    broke (a counter per kind in the gateway's status), `detail` says how."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def read_ack(payload: bytes, uscc: str, gateway_id: str) -> Ack:
    """The ack in `payload`, published for gateway (`uscc`, `gateway_id`); AckRefused on
    anything else."""
    if len(payload) > MAX_ACK_BYTES:
        raise AckRefused("oversized", f"{len(payload)} bytes, more than {MAX_ACK_BYTES}")
    try:
        message = load_json(payload, "the message")
        schema = message.get("schema") if isinstance(message, dict) else None
        if schema != ACK_SCHEMA_ID:
            shown = schema if isinstance(schema, str) else type(schema).__name__
            raise ContractError(f"schema: {shown!r} is not an ack this gateway takes")
        validate("ack.v1.json", message)
        check_text(message)
    except ContractError as exc:
        raise AckRefused("malformed", str(exc)) from None
    return _ack(message)


def _ack(message: dict[str, Any]) -> Ack:
    return Ack(message["batch_id"], AckStatus(message["status"]), message.get("reason"))


def excerpt(payload: bytes, limit: int = EXCERPT_BYTES) -> str:
    """The start of a message for a log line: escaped (one line, ASCII), at most `limit`
    bytes of it, with its full size when cut."""
    shown = repr(bytes(payload[:limit]))
    return shown if len(payload) <= limit else f"{shown}… ({len(payload)} bytes)"


def one_line(text: str, limit: int = 300) -> str:
    """Text for a log line: at most `limit` characters, line breaks, control characters and
    surrogates escaped (a message cannot forge log lines)."""
    return repr(text[:limit])[1:-1] + ("…" if len(text) > limit else "")
