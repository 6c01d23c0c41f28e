"""The protocol-independent bases of device configuration (points, connections, devices),
which protocol modules in collectors/ extend, and the checks of a point's scale and name.
Pure."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from pydantic import Field, field_validator, model_validator

from gateway.models.fields import SCALE_LIMIT, VALUE_LIMIT, ConfigFloat, Frozen
from gateway.models.readings import LABEL_QUANTITIES, PointKind, Quantity

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
