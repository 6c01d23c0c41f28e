"""Unit conversions are exact decimals and refuse to mix dimensions."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.units import UnitError, convert


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        ("1234.5", "kWh", "MWh", "1.2345"),
        ("1", "MWh", "GJ", "3.6"),
        ("1", "tce", "GJ", "29.307"),  # GB/T 2589-2020: 1 kgce = 29 307 kJ
        ("2.5", "t", "kg", "2500"),
        ("1", "kvarh", "kvarh", "1"),
    ],
)
def test_conversions_are_exact(value, source, target, expected):
    assert convert(Decimal(value), source, target) == Decimal(expected)


@pytest.mark.parametrize(("source", "target"), [("kWh", "t"), ("m3", "Nm3"), ("kWh", "furlong")])
def test_mixing_dimensions_is_an_error_naming_both_units(source, target):
    with pytest.raises(UnitError, match=f"cannot convert {source} to {target}"):
        convert(Decimal(1), source, target)
