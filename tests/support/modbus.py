"""Helpers for Modbus tests: site-style device configs pointing at the simulator."""

from __future__ import annotations

from typing import Any

from collectors.modbus import ModbusRtuDevice, ModbusRtuOverTcpDevice, ModbusTcpDevice
from collectors.modbus.config import AnyModbusDevice
from collectors.modbus.profiles import load_profile
from simulators.modbus_fleet import MeterFleet

ALL_SIM_POINTS = [p.name for p in load_profile("tanji-sim").points]
FAST = {"timeout_s": 0.3, "poll_interval_s": 0.2, "backoff_initial_s": 0.1, "backoff_max_s": 0.4}


def device_for(
    fleet: MeterFleet, index: int, points: list[str] | None = None, **settings: Any
) -> AnyModbusDevice:
    """The device config a site would write for meter `index` of `fleet`."""
    connection: dict[str, Any] = {**FAST, "unit_id": fleet.unit_of(index)}
    connection.update({k: v for k, v in settings.items() if k not in ("max_gap",)})
    extra = {k: v for k, v in settings.items() if k == "max_gap"}
    body = {"profile": fleet.profile.id, "profile_points": points or ALL_SIM_POINTS, **extra}
    if fleet.transport == "rtu":
        connection.update(serial_port=fleet.serial_port_of(index), parity="N")
        return ModbusRtuDevice.model_validate({**body, "connection": connection})
    connection.update(host="127.0.0.1", port=fleet.port_of(index))
    model = ModbusTcpDevice if fleet.transport == "tcp" else ModbusRtuOverTcpDevice
    return model.model_validate({**body, "connection": connection})
