"""Units of measure (pint, exact decimals): the energy and volume units activity data is
reported in, plus the two Chinese accounting units the platform expects.

- `kgce` / `tce`: kilogram / tonne of standard coal equivalent, 1 kgce = 29 307 kJ
  (GB/T 2589-2020, definition of 标准煤当量). Converting energy to kgce by this definition is
  its calorific value; the coefficients the footprint uses come from the GB/T 2589 tables
  (gateway/data), not from this conversion.
- `Nm3`: normal cubic metre (gas volume at standard conditions), kept distinct from `m**3` so
  an operating-conditions volume is never silently taken for a normal one.
"""

from __future__ import annotations

import functools
from decimal import Decimal

import pint

from gateway.errors import TanjiError


@functools.cache
def registry() -> pint.UnitRegistry[Decimal]:
    ureg: pint.UnitRegistry[Decimal] = pint.UnitRegistry(non_int_type=Decimal)
    ureg.define("kilogram_coal_equivalent = 29307 * kJ = kgce")
    ureg.define("tce = 1000 * kgce")
    ureg.define("Nm3 = [normal_volume]")
    ureg.define("var = [reactive_power] = VAR")  # reactive power: not interchangeable with W
    return ureg


# canonical units of tanji's quantities (gateway.models.QUANTITY_UNITS) in pint spelling
PINT_NAMES = {"kWh": "kWh", "kvarh": "kilovar * hour", "m3": "m**3", "t": "t", "unit": "count"}


class UnitError(TanjiError, ValueError):
    pass


def convert(value: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """`value` in `from_unit` expressed in `to_unit`, in decimal arithmetic; UnitError names
    the two units when they measure different things."""
    ureg = registry()
    try:
        q = ureg.Quantity(value, PINT_NAMES.get(from_unit, from_unit))
        out = q.to(PINT_NAMES.get(to_unit, to_unit)).magnitude
    except (pint.errors.DimensionalityError, pint.errors.UndefinedUnitError) as exc:
        raise UnitError(f"cannot convert {from_unit} to {to_unit}: {exc}") from None
    return out if isinstance(out, Decimal) else Decimal(str(out))
