"""Meters and their metrology: identity, carrier and accuracy class, the lines a meter serves,
its exchanges and its calibration certificates. Pure."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.models.fields import VALUE_LIMIT, Frozen
from gateway.models.readings import Carrier


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
