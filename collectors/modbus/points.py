"""A Modbus point: which register or bit holds it (function code, address, data type, byte
order, scale), with the protocol's request limits. Validated by pydantic; knows nothing of I/O.
The meter profiles (`profiles`) and the device configuration (`config`) both build on it."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from collectors.modbus.decode import UNSIGNED_BITS, ByteOrder, DataType, register_count
from gateway.models import (
    SCALE_LIMIT,
    VALUE_LIMIT,
    WHOLE,
    PointKind,
    PointSpec,
    float_step,
    in_range,
    scale_problem,
)

FunctionCode = Literal[1, 2, 3, 4]
"""1 coils, 2 discrete inputs (bits); 3 holding registers, 4 input registers (16-bit words)."""

BIT_FUNCTIONS = (1, 2)
MAX_REGISTERS = 125  # per read request, Modbus Application Protocol v1.1b3 section 6.3
MAX_BITS = 2000  # per read request, same section 6.1/6.2


class ModbusPoint(PointSpec):
    address: Annotated[int, in_range(0, 65535)] = Field(
        description="register (or coil/input) address, 0-based on the wire"
    )
    function_code: Annotated[FunctionCode, WHOLE] = 3
    data_type: DataType
    word_order: ByteOrder = "ABCD"
    scale: Decimal = Field(
        default=Decimal(1),
        ge=-SCALE_LIMIT,
        le=SCALE_LIMIT,
        description="value = register x scale + offset; not 0, and positive on a counter",
    )
    offset: Decimal = Field(default=Decimal(0), ge=-VALUE_LIMIT, le=VALUE_LIMIT)
    bit: Annotated[int, in_range(0, 63)] | None = Field(
        default=None, description="first bit of a bit field (0 = least significant)"
    )
    bit_count: Annotated[int, in_range(1, 64)] = 1

    @model_validator(mode="after")
    def _modbus_consistent(self) -> ModbusPoint:
        if self.kind is PointKind.LABEL:
            raise ValueError(
                f"{self.quantity.value} is text; Modbus points here are numbers (read product"
                " codes and orders over OPC UA)"
            )
        bits_fc = self.function_code in BIT_FUNCTIONS
        if bits_fc != (self.data_type == "bool"):
            raise ValueError(
                "function codes 1 and 2 read single bits: use data_type 'bool' with them and"
                " only with them"
            )
        last = self.address + register_count(self.data_type) - 1
        if last > 65535:
            raise ValueError(f"{self.data_type} at address {self.address} runs past 65535")
        problem = scale_problem(self.scale, self.kind)
        if problem:
            raise ValueError(problem)
        if self.bit is not None:
            width = UNSIGNED_BITS.get(self.data_type)
            if width is None:
                raise ValueError("a bit field needs an unsigned data_type (uint16/32/64)")
            if self.bit + self.bit_count > width:
                raise ValueError(
                    f"bits {self.bit}..{self.bit + self.bit_count - 1} do not fit in {width} bits"
                )
            if self.scale != 1 or self.offset != 0 or self.kind is PointKind.COUNTER:
                raise ValueError("a bit field is a gauge read as an integer (no scale or offset)")
        # float counters exist on real meters (no defined rollover); signed ones make no sense
        if self.kind is PointKind.COUNTER and self.data_type not in (
            *UNSIGNED_BITS,
            "float32",
            "float64",
        ):
            raise ValueError(f"a counter must be unsigned or a float, not {self.data_type}")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits, for function codes 1 and 2) this point occupies."""
        return register_count(self.data_type)

    def counter_modulus(self) -> Decimal | None:
        bits = UNSIGNED_BITS.get(self.data_type)
        return Decimal(2**bits) * self.scale if bits else None

    def resolution(self, value: Decimal) -> Decimal | None:
        """The register's step at `value`: the scale for integers; for floats the spacing of
        representable values there (it grows with the value: a float32 kWh counter at
        123 456.7 kWh steps by 1/128 kWh)."""
        mantissa_bits = {"float32": 23, "float64": 52}.get(self.data_type)
        if mantissa_bits is None:
            return abs(self.scale) if self.data_type != "bool" else None
        raw = float(abs((value - self.offset) / self.scale)) if self.scale else 0.0
        return float_step(raw, mantissa_bits) * abs(self.scale)
