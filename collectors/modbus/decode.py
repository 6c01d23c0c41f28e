"""Decode Modbus register words into numbers: data types, byte/word orders, scale.

Pure functions, no I/O. Byte orders use the Telegraf notation: the letters name the bytes of
the value from most to least significant as they appear on the wire (ABCD = big-endian words
in big-endian order; CDAB = word-swapped; BADC = byte-swapped; DCBA = little-endian).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable
from decimal import Context, Decimal
from typing import Literal

from gateway.errors import TanjiFailure

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
_EXACT = Context(prec=1100)


class DecodeError(TanjiFailure, ValueError):
    """The registers cannot be turned into a number; `reason` is a stable code. What a device
    sent, not the user's input: the collector makes it a bad reading with that reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def register_count(data_type: DataType) -> int:
    """Registers (16-bit words) a value occupies; a `bool` (coil/discrete input) is one bit."""
    return 1 if data_type == "bool" else _FORMATS[data_type][1]


def words_to_bytes(words: list[int]) -> bytes:
    """Register words as they travel on the wire (each word big-endian)."""
    try:
        return struct.pack(f">{len(words)}H", *words)
    except struct.error:
        raise DecodeError("bad-register", f"register word out of range in {words}") from None


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


Decoder = Callable[[bytes], Decimal]


def decoder(
    data_type: DataType,
    order: ByteOrder,
    scale: Decimal = Decimal(1),
    offset: Decimal = Decimal(0),
    bit: int | None = None,
    bit_count: int = 1,
) -> Decoder:
    """A function from the wire bytes of one value to `value * scale + offset`, exactly (or to
    bits bit..bit+bit_count-1 of an unsigned value, bit 0 least significant).

    Integers are exact in decimal arithmetic; floats convert from their exact binary value;
    NaN and infinities raise DecodeError, never become numbers. Built once per point: polling
    calls it for every value read.
    """
    # cached by the exact digits of scale and offset: Decimal("0.1") == Decimal("0.10"), but
    # they give values written with different exponents ("12.3" vs "12.30")
    return _decoder(data_type, order, str(scale), str(offset), bit, bit_count)


@functools.lru_cache(maxsize=4096)  # points of one meter model share their decoders
def _decoder(
    data_type: DataType,
    order: ByteOrder,
    scale_text: str,
    offset_text: str,
    bit: int | None,
    bit_count: int,
) -> Decoder:
    scale, offset = Decimal(scale_text), Decimal(offset_text)
    if data_type == "bool":
        return lambda raw: Decimal(raw[0] & 1)
    fmt, count = _FORMATS[data_type]
    unpack = struct.Struct(fmt).unpack
    size = 2 * count
    swap = order != "ABCD" and not (count == 1 and order == "CDAB")
    is_float = fmt[-1] in "fd"
    plain = scale == 1 and not offset
    mask = (1 << bit_count) - 1
    if bit is not None and data_type not in UNSIGNED_BITS:
        raise ValueError(f"bit fields need an unsigned type, not {data_type}")

    def run(raw: bytes) -> Decimal:
        if len(raw) != size:
            raise DecodeError(
                "short-response", f"{data_type} needs {count} registers, got {len(raw) / 2:g}"
            )
        (number,) = unpack(_to_abcd(raw, order) if swap else raw)
        if is_float and not math.isfinite(number):
            reason = "nan" if math.isnan(number) else "infinite"
            raise DecodeError(reason, f"{data_type} register value is {number}")
        if bit is not None:
            return Decimal((number >> bit) & mask)
        value = Decimal(number)  # exact, floats included
        # one rounding at 1100 digits: exact for any register value, scale and offset
        return value if plain else _EXACT.fma(value, scale, offset)

    return run


def decode(
    words: list[int],
    data_type: DataType,
    order: ByteOrder,
    scale: Decimal,
    offset: Decimal = Decimal(0),
) -> Decimal:
    """Decode register words into `value * scale + offset`, exactly (see `decoder`)."""
    return decoder(data_type, order, scale, offset)(words_to_bytes(words))


def decode_bits(
    words: list[int], data_type: DataType, order: ByteOrder, first_bit: int, bit_count: int
) -> Decimal:
    """A bit field of an unsigned register value (see `decoder`)."""
    return decoder(data_type, order, bit=first_bit, bit_count=bit_count)(words_to_bytes(words))


def encode(value: int | float, data_type: DataType, order: ByteOrder) -> list[int]:
    """Inverse of decode (unscaled): used by the simulators and tests."""
    fmt, _ = _FORMATS[data_type]
    abcd = struct.pack(fmt, value)
    # the reordering is an involution for every order, so applying it again maps back to wire
    wire = _to_abcd(abcd, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]
