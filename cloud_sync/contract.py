"""Platform contract: topics, batch payloads with content-derived ids, acks, JSON Schemas.

The schemas in cloud_sync/schemas/ are the contract; both the gateway and the platform
simulator validate against them. Changing a schema means a new version file: activity
batches and raw readings batches are at version 2 (docs/platform-contract.md lists what
changed from 1; the platform still takes readings batches of version 1), acks at 2 (signed
by the platform; cloud_sync/acks.py), version 1 acks are unsigned.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from gateway.errors import TanjiError
from gateway.evidence import canonical_json, sha256_hex
from gateway.models import ActivityRecord, Reading

CONTRACT_VERSION = 2
BATCH_SCHEMA_ID = "tanji.activity-batch/2"
BATCH_SCHEMA_FILE = "activity-batch.v2.json"
ACK_SCHEMA_ID = "tanji.ack/1"
READINGS_SCHEMA_ID = "tanji.readings-batch/2"
READINGS_SCHEMA_FILE = "readings-batch.v2.json"
READINGS_SCHEMA_FILES = {  # what a platform takes: gateways are upgraded one by one
    "tanji.readings-batch/1": "readings-batch.v1.json",
    READINGS_SCHEMA_ID: READINGS_SCHEMA_FILE,
}


@dataclass(frozen=True)
class Topics:
    """MQTT topics of one gateway: `{prefix}/{uscc}/{gateway_id}/{activity|ack|status}`."""

    prefix: str
    uscc: str
    gateway_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.uscc}/{self.gateway_id}"

    @property
    def activity(self) -> str:
        return f"{self.base}/activity"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def readings(self) -> str:
        return f"{self.base}/readings"


@cache
def schema(name: str) -> dict[str, Any]:
    text = resources.files("cloud_sync").joinpath("schemas", name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(name: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema(name), validate_formats=True)


class ContractError(TanjiError, ValueError):
    """A message does not satisfy the contract; the text names the offending field."""


def validate(name: str, message: Any) -> None:
    """ContractError naming the first offending field (in document order) when `message` does
    not satisfy the schema file `name`."""
    validator = _validator(name)
    try:
        if validator.is_valid(message):
            return
        errors = sorted(
            validator.iter_errors(message), key=lambda e: [str(p) for p in e.instance_path]
        )
    except (ValueError, TypeError) as exc:  # e.g. a lone surrogate: not valid UTF-8 text
        raise ContractError(f"(message): cannot be checked: {exc}") from None
    first = errors[0]
    where = "/".join(str(p) for p in first.instance_path) or "(message)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise ContractError(f"{where}: {first.message}{more}")


def batch_id(
    uscc: str, gateway_id: str, items: Sequence[dict[str, Any]], key: str = "records"
) -> str:
    """SHA-256 of the canonical JSON of the batch's content (not of when it was made)."""
    return sha256_hex(canonical_json({"uscc": uscc, "gateway_id": gateway_id, key: list(items)}))


def build_batch(uscc: str, gateway_id: str, records: Sequence[ActivityRecord]) -> dict[str, Any]:
    body = [r.model_dump(mode="json") for r in records]
    batch = {
        "schema": BATCH_SCHEMA_ID,
        "batch_id": batch_id(uscc, gateway_id, body),
        "uscc": uscc,
        "gateway_id": gateway_id,
        "records": body,
    }
    validate(BATCH_SCHEMA_FILE, batch)
    return batch


def reading_message(seq: int, r: Reading) -> dict[str, Any]:
    """A stored reading as the readings stream carries it (`seq`: its number in the store)."""
    return {
        "seq": seq,
        "meter_id": r.meter_id,
        "point": r.point,
        "quantity": r.quantity.value,
        "kind": r.kind.value,
        "unit": r.unit,
        "ts_ns": str(r.ts_ns),
        "source_ts_ns": None if r.source_ts_ns is None else str(r.source_ts_ns),
        "server_ts_ns": None if r.server_ts_ns is None else str(r.server_ts_ns),
        "value": None if r.value is None else str(r.value),
        "text": r.text,
        "quality": r.quality.status.value,
        "reason": r.quality.reason,
        "raw": r.raw.hex(),
    }


def build_readings_batch(
    uscc: str, gateway_id: str, readings: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """A raw readings batch (readings-batch.v2.json) of readings already in contract form."""
    batch = {
        "schema": READINGS_SCHEMA_ID,
        "batch_id": batch_id(uscc, gateway_id, readings, "readings"),
        "uscc": uscc,
        "gateway_id": gateway_id,
        "readings": list(readings),
    }
    validate(READINGS_SCHEMA_FILE, batch)
    return batch


def parse_batch(payload: bytes) -> dict[str, Any]:
    """Decode and check an activity batch as the platform receives it; ContractError on any
    problem."""
    message = _checked(payload, BATCH_SCHEMA_FILE, "records")
    for i, record in enumerate(message["records"]):
        if record["uscc"] != message["uscc"] or record["gateway_id"] != message["gateway_id"]:
            raise ContractError(f"records/{i}: uscc or gateway_id differs from the batch's")
    return message


def parse_readings_batch(payload: bytes) -> dict[str, Any]:
    """Decode and check a raw readings batch of version 1 or 2; ContractError on any problem.
    A version 1 reading comes out as version 2 has it (kind from its quantity, no server
    timestamp, no text)."""
    message = load_json(payload, "the message")
    version = message.get("schema") if isinstance(message, dict) else None
    schema_file = READINGS_SCHEMA_FILES.get(version) if isinstance(version, str) else None
    if schema_file is None:
        known = ", ".join(READINGS_SCHEMA_FILES)
        raise ContractError(f"schema: {version!r} is not a readings batch this takes ({known})")
    checked = _checked(message, schema_file, "readings")
    if schema_file != READINGS_SCHEMA_FILE:
        checked["readings"] = [
            {"kind": _V1_KINDS.get(r["quantity"], "gauge"), "server_ts_ns": None, "text": None, **r}
            for r in checked["readings"]
        ]
    return checked


# version 1 readings carry no kind: the counters among its quantities (its other ones are
# gauges; it has no labels)
_V1_KINDS = {
    "active_energy_import": "counter",
    "active_energy_export": "counter",
    "reactive_energy_import": "counter",
    "reactive_energy_export": "counter",
    "gas_volume": "counter",
    "steam_mass": "counter",
    "water_volume": "counter",
    "production_count": "counter",
}


def load_json(payload: bytes, what: str) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise ContractError(f"{what} is nested too deeply to read") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ContractError(f"{what} cannot be read: {exc}") from None


def check_text(message: Any, where: str = "") -> None:
    """ContractError naming the first string (key or value) in decoded JSON that is not
    Unicode text: JSON's escapes can spell a lone surrogate (`"\\udc00"`), which no UTF-8
    store, log or canonical form takes."""
    if isinstance(message, str):
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:
            raise ContractError(
                f"{where or '(message)'}: not Unicode text (a lone surrogate)"
            ) from None
    elif isinstance(message, dict):
        for key, value in message.items():
            check_text(key, where)
            check_text(value, f"{where}/{key}" if where else str(key))
    elif isinstance(message, list):
        for i, value in enumerate(message):
            check_text(value, f"{where}/{i}" if where else str(i))


def _checked(payload: bytes | dict[str, Any], schema_file: str, key: str) -> dict[str, Any]:
    message = load_json(payload, "the message") if isinstance(payload, bytes) else payload
    validate(schema_file, message)
    expected = batch_id(message["uscc"], message["gateway_id"], message[key], key)
    if message["batch_id"] != expected:
        raise ContractError(f"batch_id does not match the content (expected {expected})")
    return dict(message)


class AckStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Ack:
    batch_id: str
    status: AckStatus
    reason: str | None = None
    issued_ns: int | None = None  # when the platform signed it (a signed ack, version 2)

    def to_json(self) -> bytes:
        """As an unsigned version 1 ack (a gateway with `platform_ack_key` refuses it; the
        platform signs acks with cloud_sync.acks.AckSigner)."""
        msg: dict[str, Any] = {
            "schema": ACK_SCHEMA_ID,
            "batch_id": self.batch_id,
            "status": self.status.value,
        }
        if self.reason is not None:
            msg["reason"] = self.reason
        validate("ack.v1.json", msg)
        return json.dumps(msg).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> Ack:
        """An unsigned version 1 ack; ContractError on any problem."""
        message = load_json(payload, "ack")
        validate("ack.v1.json", message)
        check_text(message)
        return cls(message["batch_id"], AckStatus(message["status"]), message.get("reason"))
