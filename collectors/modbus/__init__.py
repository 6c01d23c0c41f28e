"""Modbus collectors: register decoding, configuration and the TCP poller."""

from collectors.base import CollectorType, register
from collectors.modbus.config import ModbusPoint, ModbusTcpConnection, ModbusTcpDevice
from collectors.modbus.tcp import ModbusTcpCollector

register(
    CollectorType(
        name="modbus_tcp",
        device_model=ModbusTcpDevice,
        create=ModbusTcpCollector.from_spec,
    )
)

__all__ = ["ModbusPoint", "ModbusTcpCollector", "ModbusTcpConnection", "ModbusTcpDevice"]
