"""Configuration of a Modbus TCP meter: where it is and which registers hold which points.

Validated by pydantic when the site configuration is loaded; knows nothing of I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from collectors.modbus.decode import ByteOrder, DataType, register_count
from gateway.models import ConnectionSpec, DeviceSpec, PointKind, PointSpec, in_range

_UNSIGNED_BITS = {"uint16": 16, "uint32": 32}


class ModbusTcpConnection(ConnectionSpec):
    host: str = Field(min_length=1)
    port: Annotated[int, in_range(1, 65535)] = 502
    unit_id: Annotated[int, in_range(0, 255)] = 1
    backoff_initial_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)


class ModbusPoint(PointSpec):
    address: Annotated[int, in_range(0, 65535)] = Field(
        description="register address, 0-based on the wire"
    )
    function_code: Literal[3, 4] = 3
    data_type: DataType
    word_order: ByteOrder = "ABCD"
    scale: Decimal = Decimal(1)

    @model_validator(mode="after")
    def _fits_in_address_space(self) -> ModbusPoint:
        last = self.address + register_count(self.data_type) - 1
        if last > 65535:
            raise ValueError(f"{self.data_type} at address {self.address} runs past register 65535")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        # float counters exist on real meters (no defined rollover); signed ones make no sense
        if self.kind is PointKind.COUNTER and self.data_type not in (*_UNSIGNED_BITS, "float32"):
            raise ValueError(f"a counter must be unsigned or float32, not {self.data_type}")
        return self

    @property
    def count(self) -> int:
        return register_count(self.data_type)

    def counter_modulus(self) -> Decimal | None:
        bits = _UNSIGNED_BITS.get(self.data_type)
        return Decimal(2**bits) * self.scale if bits else None


class ModbusTcpDevice(DeviceSpec):
    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    connection: ModbusTcpConnection
    points: tuple[ModbusPoint, ...] = Field(min_length=1)
