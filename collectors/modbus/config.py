"""Configuration of Modbus devices: transport (TCP, RTU on a serial port, RTU over TCP),
request limits, and which registers or bits hold which points.

Validated by pydantic when the site configuration is loaded; knows nothing of I/O. Devices that
share a link (one serial port, or one host:port with several unit ids behind it) are grouped
by `link_key`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from collectors.modbus.decode import UNSIGNED_BITS, ByteOrder, DataType, register_count
from gateway.models import (
    SCALE_LIMIT,
    VALUE_LIMIT,
    WHOLE,
    ConfigFloat,
    ConnectionSpec,
    DeviceSpec,
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


class ModbusLinkSettings(ConnectionSpec):
    """What every Modbus transport has: the unit id and how to behave on failure."""

    unit_id: Annotated[int, in_range(0, 255)] = 1
    retries: Annotated[int, in_range(0, 5)] = Field(
        default=1, description="extra attempts of a request that timed out or found the device busy"
    )
    backoff_initial_s: ConfigFloat = Field(default=1.0, ge=0.01, le=3600)
    backoff_max_s: ConfigFloat = Field(default=60.0, ge=0.01, le=3600)


class ModbusTcpConnection(ModbusLinkSettings):
    host: str = Field(min_length=1)
    port: Annotated[int, in_range(1, 65535)] = 502


class ModbusRtuOverTcpConnection(ModbusLinkSettings):
    """RTU frames (with CRC, no MBAP header) through a serial device server's TCP port."""

    host: str = Field(min_length=1)
    port: Annotated[int, in_range(1, 65535)]
    unit_id: Annotated[int, in_range(1, 247)] = 1


class ModbusRtuConnection(ModbusLinkSettings):
    """A local RS-485/RS-232 port. Defaults follow Modbus over Serial Line v1.02 section 2.5.1
    (8 data bits, even parity, 1 stop bit); many meters ship set to no parity instead."""

    serial_port: str = Field(min_length=1, description="e.g. /dev/ttyUSB0")
    baudrate: Annotated[Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200], WHOLE] = 9600
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Annotated[Literal[1, 2], WHOLE] = 1
    bytesize: Annotated[Literal[7, 8], WHOLE] = 8
    unit_id: Annotated[int, in_range(1, 247)] = 1
    inter_frame_delay_s: ConfigFloat | None = Field(
        default=None,
        ge=0,
        le=1,
        description="silence between frames; default 3.5 characters (1.75 ms above 19200 baud)",
    )

    @property
    def char_time_s(self) -> float:
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    @property
    def frame_gap_s(self) -> float:
        if self.inter_frame_delay_s is not None:
            return self.inter_frame_delay_s
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_time_s


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


class ModbusDevice(DeviceSpec):
    """Points and request limits shared by every Modbus transport. `profile` names a register
    map in collectors/modbus/profiles/ whose points (`profile_points`, default: the profile's
    default points) come before any listed in `points`."""

    profile: str | None = None
    profile_points: tuple[str, ...] | None = None
    points: tuple[ModbusPoint, ...] = Field(min_length=1)
    max_registers_per_request: Annotated[int, in_range(1, MAX_REGISTERS)] = MAX_REGISTERS
    max_bits_per_request: Annotated[int, in_range(1, MAX_BITS)] = MAX_BITS
    max_gap: Annotated[int, in_range(0, MAX_REGISTERS)] = Field(
        default=8,
        description="unused addresses a request may span to join two points into one request",
    )
    disabled_retry_initial_s: ConfigFloat = Field(
        default=60.0,
        ge=0.1,
        le=86400,
        description="a point the device refuses is asked again after this, doubling",
    )
    disabled_retry_max_s: ConfigFloat = Field(default=3600.0, ge=0.1, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _expand_profile(cls, data: Any) -> Any:
        from collectors.modbus.profiles import expand_profile  # profiles build on this module

        return expand_profile(data)

    @model_validator(mode="after")
    def _retry_order(self) -> ModbusDevice:
        if self.disabled_retry_max_s < self.disabled_retry_initial_s:
            raise ValueError(
                f"disabled_retry_max_s ({self.disabled_retry_max_s:g}) is below"
                f" disabled_retry_initial_s ({self.disabled_retry_initial_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _points_fit_in_a_request(self) -> ModbusDevice:
        for p in self.points:
            if p.function_code not in BIT_FUNCTIONS and p.count > self.max_registers_per_request:
                raise ValueError(
                    f"point {p.name!r} ({p.data_type}) needs {p.count} registers, more than"
                    f" max_registers_per_request ({self.max_registers_per_request})"
                )
        return self


class ModbusTcpDevice(ModbusDevice):
    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    connection: ModbusTcpConnection


class ModbusRtuOverTcpDevice(ModbusDevice):
    protocol: Literal["modbus_rtu_over_tcp"] = "modbus_rtu_over_tcp"
    connection: ModbusRtuOverTcpConnection


class ModbusRtuDevice(ModbusDevice):
    protocol: Literal["modbus_rtu"] = "modbus_rtu"
    connection: ModbusRtuConnection


AnyModbusDevice = ModbusTcpDevice | ModbusRtuOverTcpDevice | ModbusRtuDevice


def link_key(device: AnyModbusDevice) -> tuple[str, ...]:
    """Devices with the same key share one connection and are served one request at a time."""
    conn = device.connection
    if isinstance(conn, ModbusRtuConnection):
        return ("rtu", conn.serial_port)
    return (device.protocol, conn.host.lower(), str(conn.port))
