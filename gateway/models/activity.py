"""Activity data: the `ActivityRecord` of one meter point over one aligned period, with its
boundaries, flags, uncertainty and data quality. Pure."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from pydantic import Field

from gateway.models.fields import Frozen
from gateway.models.meters import CalibrationStatus, LineShare
from gateway.models.readings import Carrier, NsTimestamp, Quantity


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
