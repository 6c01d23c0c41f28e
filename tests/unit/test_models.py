"""Reading.trusted (the collectors' fast path) makes exactly what validation makes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from gateway.models import PointKind, Quality, Quantity, Reading

FIELDS = {
    "meter_id": "M1",
    "point": "main",
    "quantity": Quantity.ACTIVE_ENERGY_IMPORT,
    "kind": PointKind.COUNTER,
    "unit": "kWh",
    "ts_ns": 1_764_000_000_123_456_789,
    "raw": b"\x00\x12\xd6\x87",
    "value": Decimal("12345.67"),
    "quality": Quality.good(),
}


@pytest.mark.parametrize("source_ts_ns", [None, 1_764_000_000_000_000_000])
def test_trusted_equals_validated_and_serialises_the_same(source_ts_ns):
    extra = {} if source_ts_ns is None else {"source_ts_ns": source_ts_ns}
    fast, checked = Reading.trusted(**FIELDS, **extra), Reading(**FIELDS, **extra)
    assert fast == checked
    assert hash(fast) == hash(checked)
    assert fast.model_dump() == checked.model_dump()
    assert fast.model_dump_json() == checked.model_dump_json()
    assert fast.model_fields_set == checked.model_fields_set
    assert Reading.model_validate_json(fast.model_dump_json()) == checked
    assert fast.model_copy(update={"value": None}).value is None


def test_trusted_readings_are_frozen_too():
    fast = Reading.trusted(**FIELDS)
    with pytest.raises(ValidationError):
        fast.value = Decimal(0)  # type: ignore[misc]
