"""Modbus collectors: TCP, RTU on a serial port and RTU over TCP, with planned block reads."""

from collectors.base import CollectorType, register
from collectors.modbus.collector import ModbusCollector, check_devices, explain
from collectors.modbus.config import (
    ModbusRtuConnection,
    ModbusRtuDevice,
    ModbusRtuOverTcpConnection,
    ModbusRtuOverTcpDevice,
    ModbusTcpConnection,
    ModbusTcpDevice,
)
from collectors.modbus.decode import UNSIGNED_BITS, encode
from collectors.modbus.discover import UnitFinding, device_for_link, site_fragment
from collectors.modbus.discover import discover as discover_units
from collectors.modbus.link import RequestFailed
from collectors.modbus.points import ModbusPoint
from collectors.modbus.profiles import Profile, ProfileError, load_profile

for _model in (ModbusTcpDevice, ModbusRtuOverTcpDevice, ModbusRtuDevice):
    register(
        CollectorType(
            name=_model.model_fields["protocol"].default,
            device_model=_model,
            create=ModbusCollector.from_spec,
            check_devices=check_devices,
            explain=explain,
        )
    )

__all__ = [
    "UNSIGNED_BITS",
    "ModbusCollector",
    "ModbusPoint",
    "ModbusRtuConnection",
    "ModbusRtuDevice",
    "ModbusRtuOverTcpConnection",
    "ModbusRtuOverTcpDevice",
    "ModbusTcpConnection",
    "ModbusTcpDevice",
    "Profile",
    "ProfileError",
    "RequestFailed",
    "UnitFinding",
    "device_for_link",
    "discover_units",
    "encode",
    "load_profile",
    "site_fragment",
]
