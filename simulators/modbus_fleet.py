"""A fleet of simulated energy meters, each a real Modbus TCP server on its own 127.0.0.1 port.

The meters are not copies of any real product; their register map (below and in
docs/simulators.md) is tanji's own. Energy is the exact integral of a plausible load curve
(a day shape plus a few-minute ripple), so the cumulative kWh register and the power register
always agree, and `SimMeter.register_at(t)` says what the counter read at any instant.

Register map (holding registers, also readable with function code 4), addresses 0-based:
  0-1  active_energy_import  uint32  ABCD  x 0.01 kWh   (counter)
  2-3  active_power          float32 ABCD  kW           (gauge)
  4-5  active_energy_import  float32 ABCD  kWh          (same counter, float form)
  6-7  active_energy_import  uint32  CDAB  x 0.01 kWh   (same counter, word-swapped)
  8    fault register        uint16        0 = ok (read-only status for tests)
"""

from __future__ import annotations

import asyncio
import enum
import math
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.modbus.decode import encode

ENERGY_RESOLUTION_KWH = Decimal("0.01")
REGISTER_COUNT = 9
DAY_S = 86400.0


class Fault(enum.StrEnum):
    NONE = "none"
    BUSY = "busy"  # answers Modbus exception 6 (server device busy)
    SILENT = "silent"  # accepts the request and never answers (a timeout for the client)


@dataclass
class SimMeter:
    """Physics of one meter: power P(t) in kW and its exact integral, energy in kWh."""

    index: int
    rated_kw: float
    initial_kwh: float
    t0: float  # epoch seconds at which energy == initial_kwh
    ripple_period_s: float
    fault: Fault = Fault.NONE
    requests: int = field(default=0)

    @classmethod
    def plausible(cls, index: int, t0: float) -> SimMeter:
        # deterministic per index so runs are reproducible
        return cls(
            index=index,
            rated_kw=40.0 + 35.0 * (index % 5),
            initial_kwh=12_345.0 + 1_000.0 * index,
            t0=t0,
            ripple_period_s=60.0 + 17.0 * index,
        )

    def power_kw(self, t: float) -> float:
        base = 0.55 * self.rated_kw
        day = 0.3 * base * math.sin(2 * math.pi * (t - 6 * 3600) / DAY_S)
        ripple = 0.15 * base * math.sin(2 * math.pi * t / self.ripple_period_s)
        return base + day + ripple

    def energy_kwh(self, t: float) -> float:
        """Initial energy plus the exact integral of power_kw from t0 to t."""
        base = 0.55 * self.rated_kw

        def antiderivative_kws(x: float) -> float:
            day = (
                -0.3 * base * DAY_S / (2 * math.pi) * math.cos(2 * math.pi * (x - 6 * 3600) / DAY_S)
            )
            w = 2 * math.pi / self.ripple_period_s
            ripple = -0.15 * base / w * math.cos(w * x)
            return base * x + day + ripple

        return self.initial_kwh + (antiderivative_kws(t) - antiderivative_kws(self.t0)) / 3600.0

    def register_at(self, t: float) -> int:
        """The integer in the 0.01 kWh counter register at time t."""
        return int(self.energy_kwh(t) * 100) % 2**32

    def counter_kwh_at(self, t: float) -> Decimal:
        return Decimal(self.register_at(t)) * ENERGY_RESOLUTION_KWH

    def registers(self, t: float) -> list[int]:
        counter = self.register_at(t)
        return [
            *encode(counter, "uint32", "ABCD"),
            *encode(self.power_kw(t), "float32", "ABCD"),
            *encode(self.energy_kwh(t), "float32", "ABCD"),
            *encode(counter, "uint32", "CDAB"),
            0,
        ]


class MeterFleet:
    """Serves N SimMeters on ports base_port .. base_port+N-1 of `host`."""

    def __init__(
        self,
        count: int,
        base_port: int,
        host: str = "127.0.0.1",
        clock: partial[float] | None = None,
    ) -> None:
        import time

        self._clock = clock or time.time
        now = self._clock()
        self.host = host
        self.base_port = base_port
        self.meters = [SimMeter.plausible(i, now) for i in range(count)]
        self._servers: list[ModbusTcpServer] = []

    def port_of(self, index: int) -> int:
        return self.base_port + index

    async def _on_access(
        self,
        meter: SimMeter,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        meter.requests += 1
        if meter.fault is Fault.BUSY:
            return ExcCodes.DEVICE_BUSY
        if meter.fault is Fault.SILENT:
            await asyncio.sleep(3600)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's registers are read-only
        first = 0 - start_address  # our block starts at register 0
        current_registers[first : first + REGISTER_COUNT] = meter.registers(self._clock())
        return None

    async def start(self) -> None:
        for meter in self.meters:
            device = SimDevice(
                id=0,  # answers every unit id, as a single meter behind its own port does
                simdata=[
                    SimData(address=0, values=[0] * REGISTER_COUNT, datatype=DataType.REGISTERS)
                ],
                action=partial(self._on_access, meter),
            )
            server = ModbusTcpServer(device, address=(self.host, self.port_of(meter.index)))
            await server.serve_forever(background=True)
            self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            await server.shutdown()  # type: ignore[no-untyped-call]
        self._servers.clear()

    async def __aenter__(self) -> MeterFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
