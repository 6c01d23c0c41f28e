"""The domain model every stage shares: quantities, readings, meters, calibration, activity data.

Pure pydantic v2 models, frozen. No I/O here; collectors may import this module and nothing
else from the gateway.
"""

from __future__ import annotations

import enum
import itertools
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    field_validator,
    model_validator,
)


@dataclass(frozen=True)
class IntRange:
    """A whole number within lo..hi, as written: 502, not "502", 502.0 or true."""

    lo: int
    hi: int

    def __call__(self, v: Any) -> Any:
        if type(v) is not int:
            raise ValueError(wrong_type(v, f"a whole number {self.lo}..{self.hi}"))
        if not self.lo <= v <= self.hi:
            raise ValueError(f"must be {self.lo}..{self.hi} (got {shown(v)})")
        return v


def in_range(lo: int, hi: int) -> BeforeValidator:
    """`Annotated[int, in_range(0, 65535)]`: the error says 'must be 0..65535 (got 70000)';
    text, fractions and booleans are refused, not converted."""
    return BeforeValidator(IntRange(lo, hi))


def wrong_type(v: Any, expected: str) -> str:
    """The message for a TOML value of the wrong type: 'must be a whole number 1..65535
    without quotes (got '502')'."""
    if isinstance(v, bool):
        return f"must be {expected}, not true/false (got {str(v).lower()})"
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return f"must be {expected}, not text (got {shown(v)})"
        return f"must be {expected} without quotes (got {shown(v)})"
    return f"must be {expected} (got {shown(v)})"


def shown(v: Any, limit: int = 40) -> str:
    """A value as an error message quotes it: its repr, cut to `limit` characters (a number
    of 5000 digits is not echoed whole)."""
    if isinstance(v, int) and v.bit_length() > 4 * limit:  # repr() refuses > 4300 digits
        return f"a number of about {int(v.bit_length() * math.log10(2))} digits"
    text = repr(v)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _whole_number(v: Any) -> Any:
    """Lets only a true int through to a Literal of ints (pydantic would take 1.0 and true)."""
    if type(v) is not int:
        raise ValueError(wrong_type(v, "a whole number"))
    return v


WHOLE = BeforeValidator(_whole_number)
"""`Annotated[Literal[1, 2], WHOLE]`: a choice of whole numbers that refuses 1.0, "1" and true."""

ConfigFloat = Annotated[float, Strict(), AllowInfNan(False)]
"""A number in site.toml: a TOML integer or float, finite (no inf, nan), never text or a
boolean. Every use gives it a range (Field(ge=..., le=...))."""

ConfigBool = Annotated[bool, Strict()]
"""true or false in site.toml; never 1, "yes" or "true"."""

VALUE_LIMIT = Decimal("1e15")
"""Bound of a configured value in a quantity's unit (plausible limits, counter values at a
meter exchange, offsets, deadbands): far above any real meter (10**15 kWh), far below what
breaks arithmetic (a float overflows at 1.8e308)."""

SCALE_LIMIT = Decimal("1e12")
"""Bound of a point's |scale| (and 1/SCALE_LIMIT its smallest): register units to the
quantity's unit, e.g. 0.01 (10 Wh steps to kWh) or 1000 (MWh to kWh)."""


class Frozen(BaseModel):
    """Base for all domain models: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- controlled vocabulary -------------------------------------------------------------------


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


# --- meters and their metrology ----------------------------------------------------------------


class CalibrationStatus(enum.StrEnum):
    """A meter's calibration at a time (rules in gateway/metrology/status.py)."""

    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    NONE = "none"
    REVOKED = "revoked"
    FAILED = "failed"


class CalibrationRecord(Frozen):
    """A calibration (校准) or legal verification (检定) certificate of one meter."""

    certificate_no: str = Field(min_length=1)
    kind: Literal["calibration", "verification"] = "calibration"
    lab: str = Field(min_length=1, description="calibrating laboratory or verification body")
    accreditation_no: str | None = Field(
        default=None, description="e.g. a CNAS L number of the calibrating lab"
    )
    calibration_date: date
    due_date: date
    result: Literal["pass", "fail", "correction"] = "pass"
    errors_found: str | None = Field(
        default=None, description="errors and corrections as the certificate states them"
    )
    expanded_uncertainty: str | None = Field(
        default=None, description="expanded uncertainty U as stated, e.g. '0.2 %'"
    )
    # lax types here (the CSV import gives text cells), but finite and bounded
    coverage_factor: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False)
    correction_percent: Decimal | None = Field(
        default=None,
        ge=-50,
        le=50,
        description="correction to add to the indication, in % of it (-0.12: reads 0.12 % high)",
    )
    reference_standard: str | None = Field(
        default=None, description="the standard the meter was compared with"
    )
    reference_standard_certificate: str | None = None
    reference_standard_lab: str | None = Field(
        default=None, description="who calibrated the reference standard (the next link)"
    )
    reference_standard_is_national: bool = Field(
        default=False,
        description="the reference standard is a national measurement standard: the chain ends",
    )
    dcc_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the certificate document (e.g. a PTB DCC XML file)",
    )

    @model_validator(mode="after")
    def _dates_in_order(self) -> CalibrationRecord:
        if self.due_date < self.calibration_date:
            raise ValueError(
                f"due_date {self.due_date} is before calibration_date {self.calibration_date}"
            )
        return self


class MeterReplacement(Frozen):
    """A meter exchanged at `at`: the old one's final reading and the new one's first, so the
    energy across the exchange is counted on both sides and not taken for a counter reset."""

    at: datetime
    point: str = "active_energy_import"
    old_final: Decimal = Field(ge=0, le=VALUE_LIMIT)
    new_initial: Decimal = Field(ge=0, le=VALUE_LIMIT)
    new_serial: str | None = None

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("needs a time zone offset, e.g. 2026-11-20T10:00:00+08:00")
        return v


class LineShare(Frozen):
    """The fraction of a meter's quantity that belongs to one production line."""

    line: str = Field(min_length=1)
    fraction: Decimal = Field(gt=0, le=1)


class Meter(Frozen):
    """A physical meter: identity, what it measures, where, and its calibration history."""

    id: str
    serial: str
    model: str
    carrier: Carrier
    accuracy_class: str
    location: str | None = None
    line: str | None = None
    allocation: tuple[LineShare, ...] = Field(
        default=(), description="the production lines it serves and each one's fraction"
    )
    calibrations: tuple[CalibrationRecord, ...] = ()
    replacements: tuple[MeterReplacement, ...] = ()
    rated_power_kw: Decimal | None = Field(
        default=None, gt=0, description="energy steps faster than this are implausible"
    )


# --- device configuration bases (protocol modules in collectors/ extend these) -----------------


POINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def float_step(raw: float, mantissa_bits: int) -> Decimal:
    """The spacing of binary floats with `mantissa_bits` (23: float32, 52: float64) at `raw`:
    a float32 kWh counter at 123 456.7 kWh steps by 1/128 kWh. Normal numbers only."""
    # raw = m * 2**e with 0.5 <= m < 1: its binade starts at 2**(e - 1)
    exponent = max(math.frexp(abs(raw))[1] - 1, -126 if mantissa_bits == 23 else -1022)
    return Decimal(2) ** (exponent - mantissa_bits)


def scale_problem(scale: Decimal, kind: PointKind) -> str | None:
    """Why a point's scale cannot be used, or None: 0 reads nothing, a negative scale on a
    counter counts backwards, and one below 1e-12 rounds a register to nothing."""
    if scale == 0:
        return "scale must not be 0"
    if kind is PointKind.COUNTER and scale < 0:
        return f"scale of a counter must be positive (got {scale}): it would count backwards"
    if abs(scale) < 1 / SCALE_LIMIT:
        return f"scale must be at least {1 / SCALE_LIMIT} in size (got {scale})"
    return None


class PointSpec(Frozen):
    """Protocol-independent part of a configured point; protocols add addressing fields.

    `name` identifies the point within its meter; it defaults to the quantity's name and must
    be given when a meter has two points of the same quantity (e.g. two production counters).
    """

    name: str
    quantity: Quantity
    kind: PointKind
    unit: str
    plausible_min: Decimal | None = Field(
        default=None,
        ge=-VALUE_LIMIT,
        le=VALUE_LIMIT,
        description="values below are `bad` (reason out-of-range), never used",
    )
    plausible_max: Decimal | None = Field(default=None, ge=-VALUE_LIMIT, le=VALUE_LIMIT)
    product: str | None = Field(
        default=None,
        min_length=1,
        description="the product a production counter counts (its line's output of it)",
    )
    max_rate_per_h: Decimal | None = Field(
        default=None,
        gt=0,
        le=VALUE_LIMIT,
        description="the most a counter can advance in an hour, in its unit (a gas meter's"
        " Qmax in m3/h, a line's top output in units/h); steps beyond are not counted",
    )

    def implausible(self, value: Decimal) -> str | None:
        """The reason code when `value` is outside the plausible range, else None."""
        if self.plausible_min is not None and value < self.plausible_min:
            return "out-of-range"
        if self.plausible_max is not None and value > self.plausible_max:
            return "out-of-range"
        return None

    @field_validator("name")
    @classmethod
    def _name_syntax(cls, v: str) -> str:
        if not POINT_NAME.match(v):
            raise ValueError(
                f"{v!r} is not a point name: 1-64 of a-z 0-9 _ . - (starting with a letter or"
                " digit)"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_quantity(cls, data: Any) -> Any:
        """The name defaults to the quantity's; a label quantity implies kind and unit."""
        if not isinstance(data, dict) or "quantity" not in data:
            return data
        if data.get("name") is None:
            data = {**data, "name": str(data["quantity"])}
        if isinstance(data["quantity"], str) and data["quantity"] in LABEL_QUANTITIES:
            data = {"kind": PointKind.LABEL, "unit": "", **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> PointSpec:
        lo, hi = self.plausible_min, self.plausible_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"plausible_min ({lo}) is above plausible_max ({hi})")
        if self.product is not None and self.quantity is not Quantity.PRODUCTION_COUNT:
            raise ValueError(
                f"product is only for production_count points, not {self.quantity.value}"
            )
        if (self.kind is PointKind.LABEL) != (self.quantity in LABEL_QUANTITIES):
            labels = ", ".join(sorted(LABEL_QUANTITIES))
            raise ValueError(
                f"kind {self.kind.value} does not fit {self.quantity.value}: the label"
                f" quantities ({labels}) and only they are of kind label"
            )
        if self.max_rate_per_h is not None and self.kind is not PointKind.COUNTER:
            raise ValueError("max_rate_per_h is for counters: a gauge's value is not a rate")
        if self.kind is PointKind.LABEL and (lo is not None or hi is not None):
            raise ValueError("a label point is text: it has no plausible_min or plausible_max")
        if self.unit != self.quantity.unit:
            raise ValueError(
                f"unit {self.unit!r} does not match {self.quantity.value}, which is stored in"
                f" {self.quantity.unit!r}; use `scale` to convert the register value"
            )
        return self

    def counter_modulus(self) -> Decimal | None:
        """Value at which this counter rolls over to zero, when the protocol defines one."""
        return None

    def resolution(self, value: Decimal) -> Decimal | None:
        """The smallest step the point's value can take near `value`, when the protocol knows
        it (None: take it from the value's last digit)."""
        return None


class ConnectionSpec(Frozen):
    """Protocol-independent part of a device connection; protocols add where and how."""

    poll_interval_s: ConfigFloat = Field(default=5.0, ge=0.01, le=86400)
    timeout_s: ConfigFloat = Field(default=2.0, ge=0.01, le=60)


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
    IMPLAUSIBLE_STEP = "implausible-step"  # a step beyond rated power x time, not counted


class BoundaryValue(Frozen):
    """The counter at a period boundary: a reading taken exactly there, or interpolated
    linearly between the good readings around it (`interpolated`), or held at the last
    reading when the readings around it are further apart than the gap limit. `value` is
    None where no single counter value exists (no reading yet, or a meter exchange between
    the readings around it). `distance_ns` is how far the nearest good reading is."""

    value: Decimal | None
    interpolated: bool = False
    distance_ns: NsTimestamp | None = Field(
        default=None, ge=0, description="to the nearest good reading; None when there is none"
    )


class Uncertainty(Frozen):
    """Standard uncertainties of a record's quantity, in its unit
    (gateway/metrology/uncertainty.py): the meter's systematic part (adds linearly over the
    same meter's periods) and the parts at its start and end boundaries (shared with the
    neighbouring periods); U = k u_c."""

    u_systematic: Decimal = Field(ge=0)
    u_start: Decimal = Field(ge=0)
    u_end: Decimal = Field(ge=0)
    expanded: Decimal = Field(ge=0, description="U, the expanded uncertainty")
    k: Decimal = Field(gt=0, description="coverage factor")
    basis: str = Field(description="what the systematic part rests on")


class DataQuality(Frozen):
    """Where a record's quantity comes from (docs/metrology.md, "Data quality"): shares of it
    measured between readings inside the period, interpolated at its boundaries, or
    attributed from a step across a gap (measured, but not when)."""

    measured_share: Decimal = Field(ge=0, le=1)
    interpolated_share: Decimal = Field(ge=0, le=1)
    gap_share: Decimal = Field(ge=0, le=1)


class ActivityRecord(Frozen):
    """Energy (or output) of one meter over one aligned period, traceable to its readings.

    `quantity` is the counter's advance between the period's boundaries, the value at each
    boundary interpolated between the good readings around it (gateway.activity.aggregation has the
    rule); consecutive records share their boundary value, so sums over records equal the
    counter's advance with nothing counted twice. `readings_root` is the Merkle root
    (gateway.evidence) of the readings the figure was computed from. Late readings give a new
    `revision` that `supersedes` the previous one; revisions are kept, never overwritten.
    """

    record_id: str
    uscc: str
    gateway_id: str
    meter_id: str
    line: str | None
    carrier: Carrier
    point: str
    point_quantity: Quantity
    product: str | None = Field(default=None, description="what a production counter counts")
    allocation: tuple[LineShare, ...] = Field(
        default=(), description="the lines the meter serves, with fractions summing to 1"
    )
    interval: str = Field(description="15min, hour, day, month or a length such as 10s")
    period_start: datetime
    period_end: datetime
    quantity: Decimal
    unit: str
    indicated_quantity: Decimal | None = Field(
        default=None, description="the counter's advance before the certificate's correction"
    )
    correction_percent: Decimal | None = Field(
        default=None, description="the certificate's correction applied to get `quantity`"
    )
    start: BoundaryValue
    end: BoundaryValue
    reading_count: int
    bad_reading_count: int
    coverage: float = Field(ge=0, le=1)
    flags: tuple[ActivityFlag, ...] = ()
    calibration_certificate: str | None
    calibration_status: CalibrationStatus = Field(
        description="the worst status of the meter's calibration on any day of the period"
    )
    uncertainty: Uncertainty | None = Field(
        default=None, description="None when neither a certificate nor the class gives one"
    )
    data_quality: DataQuality | None = None
    readings_root: str
    revision: int = Field(default=0, ge=0)
    supersedes: str | None = Field(
        default=None, description="record_id of the previous revision of this period"
    )
    tce: Decimal | None = Field(
        default=None, description="tonnes of standard coal equivalent (GB/T 2589-2020)"
    )
    co2e_t: Decimal | None = Field(
        default=None, description="tonnes of CO2, grid emission factor (electricity)"
    )
    co2e_footprint_t: Decimal | None = Field(
        default=None, description="tonnes of CO2e, electricity carbon-footprint factor"
    )
    factors: tuple[str, ...] = Field(default=(), description="ids of the factors used")
