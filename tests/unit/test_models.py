"""Reading.trusted (the collectors' fast path) makes exactly what validation makes; a reading
carries a number or a label's text, consistently with its kind and quality."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from gateway.models import PointKind, PointSpec, Quality, Quantity, Reading

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


LABEL = {
    **FIELDS,
    "point": "product_code",
    "quantity": Quantity.PRODUCT_CODE,
    "kind": PointKind.LABEL,
    "unit": "",
    "value": None,
    "text": "BAT-48V",
}


@pytest.mark.parametrize(
    "fields",
    [
        FIELDS,
        {**FIELDS, "source_ts_ns": 1_764_000_000_000_000_000},
        {**FIELDS, "server_ts_ns": 1_764_000_000_100_000_000},
        LABEL,
        {**LABEL, "source_ts_ns": 1, "server_ts_ns": 2},
    ],
)
def test_trusted_equals_validated_and_serialises_the_same(fields):
    fast, checked = Reading.trusted(**fields), Reading(**fields)
    assert fast == checked
    assert hash(fast) == hash(checked)
    assert fast.model_dump() == checked.model_dump()
    assert fast.model_dump_json() == checked.model_dump_json()
    assert fast.model_fields_set == checked.model_fields_set
    assert Reading.model_validate_json(fast.model_dump_json()) == checked
    assert fast.model_copy(update={"value": None}).value is None


def test_new_fields_appear_in_the_json_form_only_when_set():
    # readings hashed into evidence before text and server_ts_ns existed keep their hashes
    assert "text" not in Reading(**FIELDS).model_dump(mode="json")
    assert "server_ts_ns" not in Reading(**FIELDS).model_dump(mode="json")
    assert Reading(**LABEL, server_ts_ns=5).model_dump(mode="json")["server_ts_ns"] == "5"
    assert Reading(**LABEL).model_dump(mode="json")["text"] == "BAT-48V"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**LABEL, "text": None}, "exactly when its quality is not bad"),
        ({**LABEL, "value": Decimal(1)}, "a label reading carries text"),
        ({**FIELDS, "text": "x"}, "a label reading carries text"),
        ({**FIELDS, "value": None}, "exactly when its quality is not bad"),
        ({**FIELDS, "kind": PointKind.LABEL}, "kind label does not fit active_energy_import"),
        ({**LABEL, "text": "x" * 257}, "text: text-too-long"),
        ({**LABEL, "text": "CELL\x00\x00"}, "text: text-with-control-characters"),
        ({**LABEL, "text": "\udcb5\udce7"}, "text: text-not-utf8"),
    ],
)
def test_inconsistent_readings_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        Reading(**fields)


def test_a_bad_label_has_no_text():
    bad = Reading(**{**LABEL, "text": None, "quality": Quality.bad("BadNodeIdUnknown")})
    assert (bad.text, bad.value) == (None, None)


def test_label_points_take_kind_and_unit_from_their_quantity():
    point = PointSpec(quantity="product_code")  # type: ignore[call-arg]
    assert (point.name, point.kind, point.unit) == ("product_code", PointKind.LABEL, "")
    with pytest.raises(ValidationError, match="only they are of kind label"):
        PointSpec(quantity="production_count", kind="label", unit="unit")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="only they are of kind label"):
        PointSpec(quantity="production_order", kind="gauge")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="no plausible_min"):
        PointSpec(quantity="product_code", plausible_min=Decimal(0))  # type: ignore[call-arg]


def test_trusted_readings_are_frozen_too():
    fast = Reading.trusted(**FIELDS)
    with pytest.raises(ValidationError):
        fast.value = Decimal(0)  # type: ignore[misc]
