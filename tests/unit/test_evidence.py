"""Canonical JSON is RFC 8785 whichever encoder writes it: the fast path for readings (ASCII
strings, no numbers) gives the same bytes as the rfc8785 library, whatever the content."""

from __future__ import annotations

from decimal import Decimal

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.evidence import canonical_json, root_of
from gateway.models import PointKind, Quality, Quantity, Reading

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | ascii_text
    | st.text(max_size=6)
    | st.integers(-(2**60), 2**60)
    | st.sampled_from([2**53 - 1, -(2**53 - 1), 2**53, 2**53 + 1, 10**21])
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ascii_text, inner, max_size=4),
    max_leaves=20,
)


@given(json_like)
def test_same_bytes_as_rfc8785(data):
    try:
        expected = bytes(rfc8785.dumps(data))
    except rfc8785.IntegerDomainError:  # beyond 2^53 - 1: refused by both
        with pytest.raises(rfc8785.IntegerDomainError):
            canonical_json(data)
        return
    assert canonical_json(data) == expected


@settings(max_examples=3000)
@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(1e-5, 1e17)
    | st.integers(0, 10**6).map(lambda n: n / 1000)
)
def test_floats_print_as_ecmascript_prints_them(x):
    """The fast path takes floats in [1e-4, 1e16) as Python prints them: same digits."""
    assert canonical_json({"x": x, "y": [x, -x]}) == bytes(rfc8785.dumps({"x": x, "y": [x, -x]}))


@given(
    point=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True),
    ts=st.integers(0, 2**63 - 1),
    raw=st.binary(max_size=8),
    value=st.decimals(allow_nan=False, allow_infinity=False, places=3) | st.none(),
    reason=st.none() | ascii_text | st.text(max_size=5),
)
def test_readings_hash_as_rfc8785_says(point, ts, raw, value, reason):
    r = Reading(
        meter_id="M-1",
        point=point,
        quantity=Quantity.ACTIVE_ENERGY_IMPORT,
        kind=PointKind.COUNTER,
        unit="kWh",
        ts_ns=ts,
        raw=raw,
        value=value,
        quality=Quality.good() if value is not None else Quality.bad(reason or "timeout"),
    )
    expected = bytes(rfc8785.dumps(r.model_dump(mode="json")))
    assert canonical_json(r) == expected
    assert canonical_json(r, without_numbers=True) == expected


def test_a_readings_json_form_has_no_numbers():
    """What lets aggregation skip the check (gateway.activity.aggregation, readings_root)."""

    def types(schema: dict, defs: dict) -> set[str]:
        if "$ref" in schema:
            return types(defs[schema["$ref"].split("/")[-1]], defs)
        found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                found |= types(sub, defs)
        for sub in schema.get("properties", {}).values():
            found |= types(sub, defs)
        return found

    schema = Reading.model_json_schema(mode="serialization")
    found = types(schema, schema.get("$defs", {}))
    assert found <= {"object", "string", "null"}, found


def test_a_changed_reading_changes_the_root():
    def r(v: str) -> Reading:
        return Reading.trusted(
            "M",
            "p",
            Quantity.ACTIVE_ENERGY_IMPORT,
            PointKind.COUNTER,
            "kWh",
            1,
            b"\x00",
            Decimal(v),
            Quality.good(),
        )

    assert root_of([r("1.00"), r("2.00")]) != root_of([r("1.00"), r("2.01")])
    assert root_of([r("1.00"), r("2.00")]) != root_of([r("2.00"), r("1.00")])
