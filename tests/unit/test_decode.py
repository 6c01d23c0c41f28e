import math
import struct
from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.modbus.decode import DecodeError, decode, decode_bits, encode, words_to_bytes

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


# 0x0102030405060708 on the wire in each order: CDAB reverses the word order, BADC swaps the
# bytes in each word, DCBA is fully little-endian
WIRE_64 = {
    "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
    "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
    "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
    "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
}


@pytest.mark.parametrize("order", ORDERS)
def test_64_bit_known_wire_layouts(order):
    assert decode(WIRE_64[order], "uint64", order, Decimal(1)) == 0x0102030405060708
    assert decode(WIRE_64[order], "int64", order, Decimal(1)) == 0x0102030405060708
    assert encode(0x0102030405060708, "uint64", order) == WIRE_64[order]


def test_int64_sign_and_uint64_top():
    assert decode([0xFFFF] * 4, "int64", "ABCD", Decimal(1)) == -1
    assert decode([0xFFFF] * 4, "uint64", "ABCD", Decimal(1)) == 2**64 - 1


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trip_is_exact(order, value):
    assert decode(encode(value, "float64", order), "float64", order, Decimal(1)) == Decimal(value)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("value", "reason"), [(math.nan, "nan"), (math.inf, "infinite"), (-math.inf, "infinite")]
)
def test_float64_nan_and_infinity_are_errors(order, value, reason):
    with pytest.raises(DecodeError) as info:
        decode(encode(value, "float64", order), "float64", order, Decimal(1))
    assert info.value.reason == reason


@given(
    value=st.integers(0, 2**64 - 1),
    scale=st.decimals("-1e6", "1e6", allow_nan=False, allow_infinity=False, places=6),
    offset=st.decimals("-1e9", "1e9", allow_nan=False, allow_infinity=False, places=3),
)
def test_scale_and_offset_are_exact(value, scale, offset):
    got = decode(encode(value, "uint64", "ABCD"), "uint64", "ABCD", scale, offset)
    with localcontext() as ctx:
        ctx.prec = 200
        assert got == Decimal(value) * scale + offset


@pytest.mark.parametrize("order", ORDERS)
def test_bit_fields(order):
    words = encode(0b1011_0000_0000_0110, "uint16", order)
    assert decode_bits(words, "uint16", order, 1, 1) == 1
    assert decode_bits(words, "uint16", order, 0, 1) == 0
    assert decode_bits(words, "uint16", order, 1, 2) == 3
    assert decode_bits(words, "uint16", order, 12, 4) == 0b1011
    wide = encode(1 << 40, "uint64", order)
    assert decode_bits(wide, "uint64", order, 40, 1) == 1


def test_equal_scales_written_differently_keep_their_exponent():
    # Decimal("0.1") == Decimal("0.10"): a decoder cache must not mix them up, or the stored
    # text of a value (and every content hash over it) would depend on which came first
    words = encode(123, "uint16", "ABCD")
    assert str(decode(words, "uint16", "ABCD", Decimal("0.1"))) == "12.3"
    assert str(decode(words, "uint16", "ABCD", Decimal("0.10"))) == "12.30"
