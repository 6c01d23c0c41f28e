"""The controlled vocabulary (quantities and their units, point kinds, carriers, quality) and
the `Reading`: one value read from a device with the exact bytes it arrived as. Pure."""

from __future__ import annotations

import enum
import itertools
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, field_validator, model_validator

from gateway.models.fields import Frozen


class Quantity(enum.StrEnum):
    """What a point measures. Every meter maps onto these names; never free text.

    Electrical quantities follow the split of IEC 62056-61 (OBIS): totals and per phase
    (L1..L3), phase-to-neutral and phase-to-phase voltages; "import" is energy delivered from
    the grid into the load.
    """

    ACTIVE_ENERGY_IMPORT = "active_energy_import"
    ACTIVE_ENERGY_EXPORT = "active_energy_export"
    REACTIVE_ENERGY_IMPORT = "reactive_energy_import"
    REACTIVE_ENERGY_EXPORT = "reactive_energy_export"
    ACTIVE_POWER = "active_power"
    ACTIVE_POWER_L1 = "active_power_l1"
    ACTIVE_POWER_L2 = "active_power_l2"
    ACTIVE_POWER_L3 = "active_power_l3"
    REACTIVE_POWER = "reactive_power"
    APPARENT_POWER = "apparent_power"
    VOLTAGE_L1_N = "voltage_l1_n"
    VOLTAGE_L2_N = "voltage_l2_n"
    VOLTAGE_L3_N = "voltage_l3_n"
    VOLTAGE_L1_L2 = "voltage_l1_l2"
    VOLTAGE_L2_L3 = "voltage_l2_l3"
    VOLTAGE_L3_L1 = "voltage_l3_l1"
    CURRENT_L1 = "current_l1"
    CURRENT_L2 = "current_l2"
    CURRENT_L3 = "current_l3"
    CURRENT_N = "current_n"
    POWER_FACTOR = "power_factor"
    FREQUENCY = "frequency"
    GAS_VOLUME = "gas_volume"
    STEAM_MASS = "steam_mass"
    WATER_VOLUME = "water_volume"
    PRODUCTION_COUNT = "production_count"
    STATUS = "status"  # a device status word or bit field (dimensionless)
    # labels (kind `label`): text a device shows, kept so energy can be put to what was made
    PRODUCT_CODE = "product_code"  # the product the line is making now
    PRODUCTION_ORDER = "production_order"  # the production (work) order it runs under

    @property
    def unit(self) -> str:
        """The canonical unit values of this quantity are stored in."""
        return QUANTITY_UNITS[self]


def _unit_of(q: Quantity) -> str:
    name = q.value
    if name.startswith("active_energy"):
        return "kWh"
    if name.startswith("reactive_energy"):
        return "kvarh"
    if name.startswith("active_power"):
        return "kW"
    if name.startswith("voltage"):
        return "V"
    if name.startswith("current"):
        return "A"
    return {
        Quantity.REACTIVE_POWER: "kvar",
        Quantity.APPARENT_POWER: "kVA",
        Quantity.POWER_FACTOR: "1",
        Quantity.FREQUENCY: "Hz",
        Quantity.GAS_VOLUME: "m3",  # at standard conditions
        Quantity.STEAM_MASS: "t",
        Quantity.WATER_VOLUME: "m3",
        Quantity.PRODUCTION_COUNT: "unit",
        Quantity.STATUS: "1",
        Quantity.PRODUCT_CODE: "",  # text, no unit
        Quantity.PRODUCTION_ORDER: "",
    }[q]


QUANTITY_UNITS: dict[Quantity, str] = {q: _unit_of(q) for q in Quantity}


class PointKind(enum.StrEnum):
    COUNTER = "counter"  # cumulative, monotonic, may roll over
    GAUGE = "gauge"  # instantaneous
    LABEL = "label"  # text (a product code, an order number): never a number, never aggregated


LABEL_QUANTITIES = frozenset({Quantity.PRODUCT_CODE, Quantity.PRODUCTION_ORDER})
LABEL_MAX_CHARS = 256


def text_problem(text: str) -> str | None:
    """Why a label's text cannot be kept as it is (a reason code), or None: too long, not
    encodable as UTF-8 (a decoder's surrogate escapes of a PLC's GBK bytes), or with control
    characters (NUL padding a collector has not cut off, line breaks)."""
    if len(text) > LABEL_MAX_CHARS:
        return "text-too-long"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text-not-utf8"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "text-with-control-characters"
    return None


class Carrier(enum.StrEnum):
    """Energy carrier (or output) a meter measures."""

    ELECTRICITY = "electricity"
    NATURAL_GAS = "natural_gas"
    STEAM = "steam"
    WATER = "water"
    COMPRESSED_AIR = "compressed_air"
    PRODUCTION = "production"


class QualityStatus(enum.StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Quality(Frozen):
    """Status of one reading; `reason` is a stable machine-readable code when not good."""

    status: QualityStatus
    reason: str | None = None

    @classmethod
    def good(cls) -> Quality:
        return cls(status=QualityStatus.GOOD)

    @classmethod
    def bad(cls, reason: str) -> Quality:
        return cls(status=QualityStatus.BAD, reason=reason)


def _hex(b: bytes) -> str:
    return b.hex()


HexBytes = Annotated[bytes, PlainSerializer(_hex, return_type=str, when_used="json")]

NsTimestamp = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]
"""UTC nanoseconds since the epoch. A decimal string in JSON: RFC 8785 (I-JSON) numbers stop
at 2**53, and nanosecond timestamps are far beyond that."""


class Reading(Frozen):
    """One value read from a device, with the exact bytes it arrived as.

    `point` names the point within its meter (unique there; by default its quantity's name).
    `ts_ns` is the gateway's UTC clock in nanoseconds since the epoch; `source_ts_ns` the
    device's time of the value and `server_ts_ns` the time a server (an OPC UA server in front
    of the device) last saw it, when the protocol gives them. `raw` are the register words or
    variant bytes as received, so a verifier can decode them again. A number is in `value`; a
    label point's text (kind `label`: a product code, an order number) is in `text`. Both are
    None exactly when the quality is bad.

    `text` and `server_ts_ns` are left out of the dumped forms when None: readings hashed into
    evidence before they existed keep their hashes.
    """

    meter_id: str
    point: str
    quantity: Quantity
    kind: PointKind
    unit: str
    ts_ns: NsTimestamp
    source_ts_ns: NsTimestamp | None = None
    server_ts_ns: NsTimestamp | None = Field(default=None, exclude_if=lambda v: v is None)
    raw: HexBytes = b""
    value: Decimal | None
    text: str | None = Field(default=None, exclude_if=lambda v: v is None)
    quality: Quality

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_from_hex(cls, v: Any) -> Any:
        return bytes.fromhex(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _value_or_text(self) -> Reading:
        label = self.kind is PointKind.LABEL
        if label != (self.quantity in LABEL_QUANTITIES):
            raise ValueError(f"kind {self.kind.value} does not fit {self.quantity.value}")
        if (self.value if label else self.text) is not None:
            raise ValueError("a label reading carries text, any other a value")
        problem = None if self.text is None else text_problem(self.text)
        if problem:
            raise ValueError(f"text: {problem}")
        missing = (self.text if label else self.value) is None
        if missing != (self.quality.status is QualityStatus.BAD):
            raise ValueError("a reading has a value (or text) exactly when its quality is not bad")
        return self

    @classmethod
    def trusted(
        cls,
        meter_id: str,
        point: str,
        quantity: Quantity,
        kind: PointKind,
        unit: str,
        ts_ns: int,
        raw: bytes,
        value: Decimal | None,
        quality: Quality,
        source_ts_ns: int | None = None,
        server_ts_ns: int | None = None,
        text: str | None = None,
    ) -> Reading:
        """A Reading from values that are already of the field types and consistent (a
        collector's decoded value, its validated point configuration, the clock), without
        validating them again.

        Collectors make tens of thousands of readings a second; validation would be most of
        their CPU. This sets exactly what pydantic's model_construct sets (the documented
        BaseModel attributes __dict__, __pydantic_fields_set__, __pydantic_extra__ and
        __pydantic_private__), only faster; tests/unit/test_models.py checks the result equals,
        dumps and hashes like a validated Reading.
        """
        r = _new(cls)
        _set(
            r,
            "__dict__",
            {
                "meter_id": meter_id,
                "point": point,
                "quantity": quantity,
                "kind": kind,
                "unit": unit,
                "ts_ns": ts_ns,
                "source_ts_ns": source_ts_ns,
                "server_ts_ns": server_ts_ns,
                "raw": raw,
                "value": value,
                "text": text,
                "quality": quality,
            },
        )
        # shared sets: frozen models never add to them
        _set(
            r,
            "__pydantic_fields_set__",
            _FIELDS_SET[source_ts_ns is None, server_ts_ns is None, text is None],
        )
        _set(r, "__pydantic_extra__", None)
        _set(r, "__pydantic_private__", None)
        return r


_new = object.__new__
_set = object.__setattr__
_OPTIONAL = ("source_ts_ns", "server_ts_ns", "text")
_FIELDS_SET = {
    unset: set(Reading.model_fields) - {name for name, u in zip(_OPTIONAL, unset, strict=True) if u}
    for unset in itertools.product((False, True), repeat=3)
}
