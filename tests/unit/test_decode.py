import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.modbus.decode import DecodeError, decode, encode, words_to_bytes

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]

# 0x01020304 as it appears on the wire in each order (Telegraf's byte-order notation)
WIRE_0x01020304 = {
    "ABCD": [0x0102, 0x0304],
    "CDAB": [0x0304, 0x0102],
    "BADC": [0x0201, 0x0403],
    "DCBA": [0x0403, 0x0201],
}


@pytest.mark.parametrize("order", ORDERS)
def test_uint32_known_wire_layouts(order):
    assert decode(WIRE_0x01020304[order], "uint32", order, Decimal(1)) == 0x01020304
    assert encode(0x01020304, "uint32", order) == WIRE_0x01020304[order]


@pytest.mark.parametrize("order", ORDERS)
def test_float32_known_value(order):
    # 123.5 is 0x42F70000 in IEEE 754 single precision
    abcd = [0x42F7, 0x0000]
    wire = encode(123.5, "float32", order)
    assert decode(wire, "float32", order, Decimal(1)) == Decimal("123.5")
    if order == "ABCD":
        assert wire == abcd


def test_int16_sign_and_byte_order():
    assert decode([0xFFFE], "int16", "ABCD", Decimal(1)) == -2
    assert decode([0xFEFF], "int16", "DCBA", Decimal(1)) == -2
    assert decode([0xFFFE], "uint16", "ABCD", Decimal(1)) == 65534


def test_scale_is_exact_decimal():
    # 1234567 x 0.01 must be exactly 12345.67, not a binary float near it
    assert decode([0x0012, 0xD687], "uint32", "ABCD", Decimal("0.01")) == Decimal("12345.67")


RANGES = {
    "int16": st.integers(-(2**15), 2**15 - 1),
    "uint16": st.integers(0, 2**16 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "uint32": st.integers(0, 2**32 - 1),
}


@pytest.mark.parametrize("data_type", sorted(RANGES))
@pytest.mark.parametrize("order", ORDERS)
@given(data=st.data())
def test_integer_round_trip(data, data_type, order):
    value = data.draw(RANGES[data_type])
    assert decode(encode(value, data_type, order), data_type, order, Decimal(1)) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(order, value):
    assert decode(encode(value, "float32", order), "float32", order, Decimal(1)) == Decimal(value)


@pytest.mark.parametrize(
    ("bits", "reason"),
    [(0x7FC00000, "nan"), (0x7F800000, "infinite"), (0xFF800000, "infinite")],
)
@pytest.mark.parametrize("order", ORDERS)
def test_nan_and_infinity_are_errors_not_numbers(bits, reason, order):
    value = struct.unpack(">f", bits.to_bytes(4, "big"))[0]
    assert math.isnan(value) or math.isinf(value)
    with pytest.raises(DecodeError) as info:
        decode(encode(value, "float32", order), "float32", order, Decimal(1))
    assert info.value.reason == reason


def test_short_response_is_an_error():
    with pytest.raises(DecodeError) as info:
        decode([1], "uint32", "ABCD", Decimal(1))
    assert info.value.reason == "short-response"


def test_raw_bytes_are_the_wire_words():
    assert words_to_bytes([0x0102, 0xA0B0]) == bytes([1, 2, 0xA0, 0xB0])
