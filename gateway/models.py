"""The domain model every stage shares: quantities, readings, meters, calibration, activity data.

Pure pydantic v2 models, frozen. No I/O here; collectors may import this module and nothing
else from the gateway.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)


def in_range(lo: int, hi: int) -> AfterValidator:
    """`Annotated[int, in_range(0, 65535)]`: the error says 'must be 0..65535 (got 70000)'."""

    def check(v: int) -> int:
        if not lo <= v <= hi:
            raise ValueError(f"must be {lo}..{hi} (got {v})")
        return v

    return AfterValidator(check)


class Frozen(BaseModel):
    """Base for all domain models: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- controlled vocabulary -------------------------------------------------------------------


class Quantity(enum.StrEnum):
    """What a point measures. Every meter maps onto these names; never free text."""

    ACTIVE_ENERGY_IMPORT = "active_energy_import"
    ACTIVE_ENERGY_EXPORT = "active_energy_export"
    ACTIVE_POWER = "active_power"
    GAS_VOLUME = "gas_volume"
    STEAM_MASS = "steam_mass"
    WATER_VOLUME = "water_volume"
    PRODUCTION_COUNT = "production_count"

    @property
    def unit(self) -> str:
        """The canonical unit values of this quantity are stored in."""
        return QUANTITY_UNITS[self]


QUANTITY_UNITS: dict[Quantity, str] = {
    Quantity.ACTIVE_ENERGY_IMPORT: "kWh",
    Quantity.ACTIVE_ENERGY_EXPORT: "kWh",
    Quantity.ACTIVE_POWER: "kW",
    Quantity.GAS_VOLUME: "m3",  # at standard conditions
    Quantity.STEAM_MASS: "t",
    Quantity.WATER_VOLUME: "m3",
    Quantity.PRODUCTION_COUNT: "unit",
}


class PointKind(enum.StrEnum):
    COUNTER = "counter"  # cumulative, monotonic, may roll over
    GAUGE = "gauge"  # instantaneous


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


class PointRef(Frozen):
    """Identifies a point: one quantity of one meter."""

    meter_id: str
    quantity: Quantity


class Reading(Frozen):
    """One value read from a device, with the exact bytes it arrived as.

    `ts_ns` is the gateway's UTC clock in nanoseconds since the epoch; `raw` are the register
    words or variant bytes as received, so a verifier can decode them again. `value` is None
    exactly when the quality is bad.
    """

    meter_id: str
    quantity: Quantity
    kind: PointKind
    unit: str
    ts_ns: NsTimestamp
    source_ts_ns: NsTimestamp | None = None
    raw: HexBytes = b""
    value: Decimal | None
    quality: Quality

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_from_hex(cls, v: Any) -> Any:
        return bytes.fromhex(v) if isinstance(v, str) else v

    @property
    def point(self) -> PointRef:
        return PointRef(meter_id=self.meter_id, quantity=self.quantity)


# --- meters and their metrology ----------------------------------------------------------------


class CalibrationRecord(Frozen):
    """A calibration or verification certificate of one meter."""

    certificate_no: str = Field(min_length=1)
    lab: str = Field(min_length=1, description="calibrating laboratory or verification body")
    accreditation_no: str | None = Field(
        default=None, description="e.g. a CNAS L number of the calibrating lab"
    )
    calibration_date: date
    due_date: date
    result: str = "pass"
    expanded_uncertainty: str | None = Field(
        default=None, description="expanded uncertainty U as stated, e.g. '0.2 %'"
    )
    coverage_factor: float | None = Field(default=None, gt=0)
    reference_standard_certificate: str | None = None
    dcc_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    def valid_at(self, day: date) -> bool:
        return self.calibration_date <= day <= self.due_date


class Meter(Frozen):
    """A physical meter: identity, what it measures, where, and its calibration history."""

    id: str
    serial: str
    model: str
    carrier: Carrier
    accuracy_class: str
    location: str | None = None
    line: str | None = None
    calibrations: tuple[CalibrationRecord, ...] = ()

    def calibration_at(self, day: date) -> CalibrationRecord | None:
        """The calibration valid on `day` (latest calibration date wins), if any."""
        valid = [c for c in self.calibrations if c.valid_at(day)]
        return max(valid, key=lambda c: c.calibration_date) if valid else None


# --- device configuration bases (protocol modules in collectors/ extend these) -----------------


class PointSpec(Frozen):
    """Protocol-independent part of a configured point; protocols add addressing fields."""

    quantity: Quantity
    kind: PointKind
    unit: str

    @model_validator(mode="after")
    def _unit_is_canonical(self) -> PointSpec:
        if self.unit != self.quantity.unit:
            raise ValueError(
                f"unit {self.unit!r} does not match {self.quantity.value}, which is stored in"
                f" {self.quantity.unit!r}; use `scale` to convert the register value"
            )
        return self

    def counter_modulus(self) -> Decimal | None:
        """Value at which this counter rolls over to zero, when the protocol defines one."""
        return None


class ConnectionSpec(Frozen):
    """Protocol-independent part of a device connection; protocols add where and how."""

    poll_interval_s: float = Field(default=5.0, gt=0, le=86400)
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class DeviceSpec(Frozen):
    """How to reach one meter and read its points; `protocol` names a registered collector."""

    protocol: str
    connection: ConnectionSpec
    points: tuple[PointSpec, ...]


# --- activity data -----------------------------------------------------------------------------


class ActivityFlag(enum.StrEnum):
    GAP = "gap"  # part of the interval had no good readings
    INTERPOLATED = "interpolated"
    CALIBRATION_EXPIRED = "calibration-expired"  # no valid calibration during the interval
    ROLLOVER = "rollover"
    COUNTER_BACKWARDS = "counter-backwards"  # counter decreased without a plausible rollover
    METER_REPLACED = "meter-replaced"
    BAD_READINGS = "bad-readings"  # the interval contains readings of bad quality


class BoundaryReading(Frozen):
    """A counter reading that opens or closes an activity interval."""

    ts_ns: NsTimestamp
    value: Decimal


class ActivityRecord(Frozen):
    """Energy (or output) of one meter over one aligned period, traceable to its readings.

    `quantity` is the counter's advance from `start.value` to `end.value`, the readings that
    bracket the period; consecutive records share their boundary reading, so sums over
    records equal the counter's advance with nothing counted twice. `readings_root` is the
    Merkle root (gateway.evidence) of the readings the figure was computed from.
    """

    record_id: str
    uscc: str
    gateway_id: str
    meter_id: str
    line: str | None
    carrier: Carrier
    point_quantity: Quantity
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit: str
    start: BoundaryReading | None
    end: BoundaryReading | None
    reading_count: int
    bad_reading_count: int
    coverage: float = Field(ge=0, le=1)
    flags: tuple[ActivityFlag, ...] = ()
    calibration_certificate: str | None
    readings_root: str
    revision: int = 0
