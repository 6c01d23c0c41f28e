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

DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

# struct format (big-endian) and register count per data type
_FORMATS: dict[str, tuple[str, int]] = {
    "int16": (">h", 1),
    "uint16": (">H", 1),
    "int32": (">i", 2),
    "uint32": (">I", 2),
    "float32": (">f", 2),
}


# enough significant digits for any float32 (the smallest subnormal has 105) times a scale
_EXACT_DIGITS = 200


class DecodeError(ValueError):
    """The registers cannot be turned into a number; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def register_count(data_type: DataType) -> int:
    return _FORMATS[data_type][1]


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


def decode(words: list[int], data_type: DataType, order: ByteOrder, scale: Decimal) -> Decimal:
    """Decode register words into a scaled Decimal.

    Integer types are exact (`int * scale` in decimal arithmetic); float32 is converted from
    its exact binary value. NaN and infinities raise DecodeError, never become numbers.
    """
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
    with localcontext() as ctx:
        ctx.prec = _EXACT_DIGITS  # exact: no rounding of the register value times its scale
        return Decimal(number) * scale


def encode(value: int | float, data_type: DataType, order: ByteOrder) -> list[int]:
    """Inverse of decode (unscaled): used by the simulators and tests."""
    fmt, _ = _FORMATS[data_type]
    abcd = struct.pack(fmt, value)
    # the reordering is an involution for every order, so applying it again maps back to wire
    wire = _to_abcd(abcd, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
