"""Decode Modbus register words into numbers: data types, byte/word orders, scale.

Pure functions, no I/O. Byte orders use the Telegraf notation: the letters name the bytes of
the value from most to least significant as they appear on the wire (ABCD = big-endian words
in big-endian order; CDAB = word-swapped; BADC = byte-swapped; DCBA = little-endian).
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal, localcontext
from typing import Literal

DataType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

# struct format (big-endian) and register count per data type
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
    "int64": (">q", 4),
    "uint64": (">Q", 4),
    "float64": (">d", 4),
}
UNSIGNED_BITS = {"uint16": 16, "uint32": 32, "uint64": 64}

# enough significant digits for the exact value of any float64 (the smallest subnormal has
# 751) times a scale, plus an offset
_EXACT_DIGITS = 1100


class DecodeError(ValueError):
    """The registers cannot be turned into a number; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def register_count(data_type: DataType) -> int:
    """Registers (16-bit words) a value occupies; a `bool` (coil/discrete input) is one bit."""
    return 1 if data_type == "bool" else _FORMATS[data_type][1]


def words_to_bytes(words: list[int]) -> bytes:
    """Register words as they travel on the wire (each word big-endian)."""
    return b"".join(w.to_bytes(2, "big") for w in words)


def _to_abcd(raw: bytes, order: ByteOrder) -> bytes:
    """Reorder wire bytes into most-significant-first (ABCD) order."""
    if len(raw) == 2:
        # a single register has only byte order: AB (ABCD, CDAB) or BA (BADC, DCBA)
        return raw if order in ("ABCD", "CDAB") else raw[::-1]
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words = words[::-1]
    return b"".join(words)


def decode(
    words: list[int],
    data_type: DataType,
    order: ByteOrder,
    scale: Decimal,
    offset: Decimal = Decimal(0),
) -> Decimal:
    """Decode register words into `value * scale + offset`, exactly.

    Integer types are exact (decimal arithmetic); floats are converted from their exact binary
    value. NaN and infinities raise DecodeError, never become numbers.
    """
    number = _unpack(words, data_type, order)
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS  # exact: no rounding of the register value times its scale
        return Decimal(number) * scale + offset


def decode_bits(
    words: list[int], data_type: DataType, order: ByteOrder, first_bit: int, bit_count: int
) -> Decimal:
    """A bit field of an unsigned register value: bits first_bit .. first_bit+bit_count-1,
    bit 0 being the least significant bit of the value."""
    number = _unpack(words, data_type, order)
    if not isinstance(number, int) or number < 0:
        raise DecodeError("bad-bit-field", f"bit fields need an unsigned type, not {data_type}")
    return Decimal((number >> first_bit) & ((1 << bit_count) - 1))


def _unpack(words: list[int], data_type: DataType, order: ByteOrder) -> int | float:
    fmt, count = _FORMATS[data_type]
    if len(words) != count:
        raise DecodeError(
            "short-response", f"{data_type} needs {count} registers, got {len(words)}"
        )
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise DecodeError("bad-register", f"register word out of range in {words}")
    (number,) = struct.unpack(fmt, _to_abcd(words_to_bytes(words), order))
    if isinstance(number, float):
        if math.isnan(number):
            raise DecodeError("nan", f"{data_type} register value is NaN")
        if math.isinf(number):
            raise DecodeError("infinite", f"{data_type} register value is {number}")
    return number  # type: ignore[no-any-return]


def encode(value: int | float, data_type: DataType, order: ByteOrder) -> list[int]:
    """Inverse of decode (unscaled): used by the simulators and tests."""
    fmt, _ = _FORMATS[data_type]
    abcd = struct.pack(fmt, value)
    # the reordering is an involution for every order, so applying it again maps back to wire
    wire = _to_abcd(abcd, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
