"""Readings as InfluxDB points: numbers as `value`, a label's text as `text`, bad as `reason`."""

from __future__ import annotations

from decimal import Decimal

from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.store.mirror import to_point

BASE = {"meter_id": "P1", "ts_ns": 1_764_000_000_000_000_000, "quality": Quality.good()}


def test_numbers_labels_and_bad_readings_become_their_own_fields():
    energy = Reading(
        **BASE,
        point="energy",
        quantity=Quantity.ACTIVE_ENERGY_IMPORT,
        kind=PointKind.COUNTER,
        unit="kWh",
        value=Decimal("12.5"),
    )
    code = Reading(
        **BASE,
        point="product_code",
        quantity=Quantity.PRODUCT_CODE,
        kind=PointKind.LABEL,
        unit="",
        value=None,
        text='CELL "A"',
    )
    bad = code.model_copy(update={"text": None, "quality": Quality.bad("BadNodeIdUnknown")})
    assert " value=12.5 " in to_point(energy).to_line_protocol()
    assert ' text="CELL \\"A\\"" ' in to_point(code).to_line_protocol()
    assert ' reason="BadNodeIdUnknown" ' in to_point(bad).to_line_protocol()
