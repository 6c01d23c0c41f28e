"""Configuration of Modbus devices: transport (TCP, RTU on a serial port, RTU over TCP),
request limits, and which registers or bits hold which points.

Validated by pydantic when the site configuration is loaded; knows nothing of I/O. Devices that
share a link (one serial port, or one host:port with several unit ids behind it) are grouped
by `link_key`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from collectors.modbus.points import BIT_FUNCTIONS, MAX_BITS, MAX_REGISTERS, ModbusPoint
from collectors.modbus.profiles import expand_profile
from gateway.models import (
    WHOLE,
    ConfigFloat,
    ConnectionSpec,
    DeviceSpec,
    in_range,
)


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
