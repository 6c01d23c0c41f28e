"""A fleet of simulated energy meters serving any meter profile over real Modbus servers.

Transports: Modbus TCP (one port per link), RTU over TCP (a serial device server's port) and
RTU on a virtual serial line (a pseudo-terminal pair at a real baud rate, see serial_line.py).
With `units_per_link` > 1 several meters share a link as unit ids 1..k, like meters on one
RS-485 bus. The default profile is tanji's own map ("tanji-sim", docs/simulators.md).

Energy is the exact integral of a plausible load curve (a day shape plus a few-minute ripple),
so counters and power always agree, and `SimMeter.counter_kwh(t)` says what any counter read
at any instant. Faults can be injected live or replayed from a scenario file: no answer, slow
answer, Modbus exception, frozen counter, counter rollover, meter replaced, noise. With a
journal the fleet writes its start time and every fault as it takes effect, so another process
(`FleetJournal`) knows every counter at any instant too.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import enum
import json
import logging
import math
import random
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.modbus import UNSIGNED_BITS, ModbusPoint, Profile, encode, load_profile
from gateway.models import Frozen, PointKind, Quantity
from simulators.serial_line import VirtualSerialLine

log = logging.getLogger(__name__)
SHUTDOWN_S = 5.0  # for each pymodbus server to stop

DAY_S = 86400.0
POWER_FACTOR = 0.92  # constant, so reactive energy is an exact multiple of active energy
TAN_PHI = math.tan(math.acos(POWER_FACTOR))
PHASE_VOLTAGE = 230.0
FREQUENCY = 50.0

Transport = Literal["tcp", "rtu-over-tcp", "rtu"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "rtu-over-tcp", "rtu")


class FaultKind(enum.StrEnum):
    SILENT = "silent"  # accepts the request and never answers
    SLOW = "slow"  # answers after `delay_s`
    EXCEPTION = "exception"  # answers with Modbus exception `code`
    BUSY = "busy"  # exception 6, server device busy
    FROZEN = "frozen"  # counters stop advancing (power goes on)
    ROLLOVER = "rollover"  # counters jump so the first wrapping register rolls over in `in_s`
    REPLACED = "replaced"  # a new meter: counters restart from zero now
    NOISE = "noise"  # relative noise of `level` on instantaneous values
    CLEAR = "clear"  # answer normally again (counter shifts from rollover/replaced remain)
    GLITCH = "glitch"  # the next `reads` answers show the energy counter at 0 (`top`: maximum)
    CHANGEOVER = "changeover"  # the line starts making `product` (the OPC UA plant only)


NOT_OVER_MODBUS = (FaultKind.CHANGEOVER,)  # the simulated meters know no products


@dataclass
class Faults:
    silent: bool = False
    delay_s: float = 0.0
    exception: int | None = None
    frozen_at: float | None = None
    noise: float = 0.0
    energy_offset_kwh: float = 0.0
    glitch_reads: int = 0  # answers left that show a glitched energy counter
    glitch_top: bool = False  # the register's maximum (0xFF..FF) instead of 0

    @property
    def active(self) -> bool:
        return bool(
            self.silent
            or self.delay_s
            or self.exception
            or self.frozen_at is not None
            or self.noise
        )


def rated_kw(index: int) -> float:
    """The rated power of simulated meter `index` (its load stays below 0.8 of it)."""
    return 40.0 + 35.0 * (index % 5)


@dataclass
class SimMeter:
    """Physics of one meter (power P(t) in kW, energy its exact integral) and its faults."""

    index: int
    unit_id: int
    rated_kw: float
    initial_kwh: float
    t0: float  # epoch seconds at which energy == initial_kwh
    ripple_period_s: float
    profile: Profile
    faults: Faults = field(default_factory=Faults)
    requests: int = 0
    rng: random.Random = field(default_factory=random.Random)
    # a main meter: measures what the meters it feeds measure, plus its losses
    feeds: tuple[SimMeter, ...] = ()
    losses: float = 0.0

    @classmethod
    def plausible(cls, index: int, unit_id: int, t0: float, profile: Profile) -> SimMeter:
        # deterministic per index so runs are reproducible
        return cls(
            index=index,
            unit_id=unit_id,
            rated_kw=rated_kw(index),
            initial_kwh=12_345.0 + 1_000.0 * index,
            t0=t0,
            ripple_period_s=60.0 + 17.0 * index,
            profile=profile,
            rng=random.Random(index),
        )

    # --- physics -------------------------------------------------------------------------------

    def power_kw(self, t: float) -> float:
        if self.feeds:
            return (1 + self.losses) * sum(m.power_kw(t) for m in self.feeds)
        base = 0.55 * self.rated_kw
        day = 0.3 * base * math.sin(2 * math.pi * (t - 6 * 3600) / DAY_S)
        ripple = 0.15 * base * math.sin(2 * math.pi * t / self.ripple_period_s)
        return base + day + ripple

    def energy_kwh(self, t: float) -> float:
        """Initial energy plus the exact integral of power_kw from t0 to t (no faults)."""
        if self.feeds:
            fed = sum(m.energy_kwh(t) - m.initial_kwh for m in self.feeds)
            return self.initial_kwh + (1 + self.losses) * fed
        base = 0.55 * self.rated_kw

        def antiderivative_kws(x: float) -> float:
            day = (
                -0.3 * base * DAY_S / (2 * math.pi) * math.cos(2 * math.pi * (x - 6 * 3600) / DAY_S)
            )
            w = 2 * math.pi / self.ripple_period_s
            ripple = -0.15 * base / w * math.cos(w * x)
            return base * x + day + ripple

        return self.initial_kwh + (antiderivative_kws(t) - antiderivative_kws(self.t0)) / 3600.0

    def counter_kwh(self, t: float) -> float:
        """What the meter's active energy counter shows at t, faults included."""
        at = self.faults.frozen_at if self.faults.frozen_at is not None else t
        return self.energy_kwh(at) + self.faults.energy_offset_kwh

    def counter_kwh_at(self, t: float) -> Decimal:
        """The 0.01 kWh uint32 register of the tanji-sim map, as kWh."""
        return Decimal(int(self.counter_kwh(t) * 100) % 2**32) * Decimal("0.01")

    def value(self, quantity: Quantity, t: float) -> float:
        """The true value of a quantity at t (noise applies to instantaneous values)."""
        energy = self.counter_kwh(t)
        p = self.power_kw(t)
        s = p / POWER_FACTOR
        instant = {
            Quantity.ACTIVE_POWER: p,
            Quantity.ACTIVE_POWER_L1: p / 3,
            Quantity.ACTIVE_POWER_L2: p / 3,
            Quantity.ACTIVE_POWER_L3: p / 3,
            Quantity.REACTIVE_POWER: p * TAN_PHI,
            Quantity.APPARENT_POWER: s,
            Quantity.VOLTAGE_L1_N: PHASE_VOLTAGE,
            Quantity.VOLTAGE_L2_N: PHASE_VOLTAGE,
            Quantity.VOLTAGE_L3_N: PHASE_VOLTAGE,
            Quantity.VOLTAGE_L1_L2: PHASE_VOLTAGE * math.sqrt(3),
            Quantity.VOLTAGE_L2_L3: PHASE_VOLTAGE * math.sqrt(3),
            Quantity.VOLTAGE_L3_L1: PHASE_VOLTAGE * math.sqrt(3),
            Quantity.CURRENT_L1: s * 1000 / 3 / PHASE_VOLTAGE,
            Quantity.CURRENT_L2: s * 1000 / 3 / PHASE_VOLTAGE,
            Quantity.CURRENT_L3: s * 1000 / 3 / PHASE_VOLTAGE,
            Quantity.CURRENT_N: 0.0,
            Quantity.POWER_FACTOR: POWER_FACTOR,
            Quantity.FREQUENCY: FREQUENCY,
        }
        if quantity in instant:
            v = instant[quantity]
            if self.faults.noise:
                v *= 1 + self.rng.uniform(-self.faults.noise, self.faults.noise)
            return v
        if quantity is Quantity.ACTIVE_ENERGY_IMPORT:
            return energy
        if quantity is Quantity.REACTIVE_ENERGY_IMPORT:
            return energy * TAN_PHI
        if quantity is Quantity.STATUS:
            return float(self.status_word())
        return 0.0  # export energies, volumes the simulated meter does not measure

    def units(self, name: str, t: float) -> float:
        """A production counter of the meter's line (tanji-sim `units_a`, `units_b`)."""
        at = self.faults.frozen_at if self.faults.frozen_at is not None else t
        rate = self.rated_kw / (200 if name.endswith("_b") else 100)
        return 1000 + rate * (at - self.t0)

    def status_word(self) -> int:
        f = self.faults
        word = int(f.active) | (f.frozen_at is not None) << 1
        return word | ((f.exception or 0) & 0xF) << 4

    def words(self, point: ModbusPoint, t: float) -> list[int]:
        """The registers `point` reads at t, encoded as the profile says."""
        true = (
            self.units(point.name, t)
            if point.quantity is Quantity.PRODUCTION_COUNT
            else self.value(point.quantity, t)
        )
        v = (true - float(point.offset)) / float(point.scale)
        if self.faults.glitch_reads and point.quantity is Quantity.ACTIVE_ENERGY_IMPORT:
            v = 0.0 if not self.faults.glitch_top else 1e12  # a float shows 1e12
        if point.data_type.startswith("float"):
            return encode(v, point.data_type, point.word_order)
        bits = UNSIGNED_BITS.get(point.data_type)
        if bits is not None:
            n = math.floor(v) if point.kind is PointKind.COUNTER else round(v)
            if self.faults.glitch_reads and self.faults.glitch_top:
                n = 2**bits - 1
            return encode(n % 2**bits, point.data_type, point.word_order)
        return encode(round(v), point.data_type, point.word_order)

    # --- faults --------------------------------------------------------------------------------

    def inject(self, kind: FaultKind, now: float, **params: float) -> None:
        f = self.faults
        match kind:
            case FaultKind.SILENT:
                f.silent = True
            case FaultKind.SLOW:
                f.delay_s = params.get("delay_s", 1.0)
            case FaultKind.EXCEPTION:
                f.exception = int(params.get("code", ExcCodes.DEVICE_FAILURE))
            case FaultKind.BUSY:
                f.exception = ExcCodes.DEVICE_BUSY
            case FaultKind.FROZEN:
                if f.frozen_at is None:  # frozen again: it stays where it stopped
                    f.frozen_at = now
            case FaultKind.ROLLOVER:
                modulus = self._first_counter_modulus_kwh()
                f.energy_offset_kwh = modulus - self.energy_kwh(now + params.get("in_s", 5.0))
            case FaultKind.REPLACED:
                f.energy_offset_kwh = -self.energy_kwh(now)
                f.frozen_at = None
            case FaultKind.NOISE:
                f.noise = params.get("level", 0.02)
            case FaultKind.GLITCH:
                f.glitch_reads = int(params.get("reads", 1))
                f.glitch_top = bool(params.get("top", 0))
            case FaultKind.CLEAR:
                if f.frozen_at is not None:
                    # the frozen register catches up; what it missed stays missed
                    f.energy_offset_kwh -= self.energy_kwh(now) - self.energy_kwh(f.frozen_at)
                self.faults = Faults(energy_offset_kwh=f.energy_offset_kwh)

    def _first_counter_modulus_kwh(self) -> float:
        for p in self.profile.modbus_points([q.name for q in self.profile.points]):
            modulus = p.counter_modulus()
            if p.quantity is Quantity.ACTIVE_ENERGY_IMPORT and modulus is not None:
                return float(modulus)
        raise ValueError(f"profile {self.profile.id} has no wrapping energy counter")


# --- scenario files ---------------------------------------------------------------------------


class ScenarioEvent(Frozen):
    at_s: float = Field(ge=0, description="seconds after the fleet started")
    meter: int | Literal["all"] = Field(description="meter index (0-based) or 'all'")
    fault: FaultKind
    duration_s: float | None = Field(default=None, gt=0, description="then cleared")
    delay_s: float | None = Field(default=None, gt=0)
    code: ExcCodes | None = Field(default=None, description="a Modbus exception code, 1-11")
    in_s: float | None = Field(default=None, gt=0)
    level: float | None = Field(default=None, gt=0, le=1)
    reads: int | None = Field(default=None, ge=1, le=1000, description="a glitch's answers")
    top: bool | None = Field(default=None, description="a glitch at the register's maximum")
    product: str | None = Field(
        default=None, min_length=1, max_length=256, description="what a changeover switches to"
    )

    @model_validator(mode="after")
    def _changeover_names_its_product(self) -> ScenarioEvent:
        if (self.fault is FaultKind.CHANGEOVER) != (self.product is not None):
            raise ValueError("a changeover, and only a changeover, names its product")
        return self


class Scenario(Frozen):
    events: tuple[ScenarioEvent, ...] = Field(min_length=1)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Read a scenario TOML; ValueError with the field path on bad input."""
        try:
            return cls.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors(include_url=False)
            where = ".".join(str(p) for p in first[0]["loc"])
            raise ValueError(f"{path}: {where}: {first[0]['msg']}") from None

    async def replay(
        self, inject: Callable[..., None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Call `inject(target, kind, **params)` for each event at its time after now, and
        with `clear` when an event's `duration_s` has passed (the Modbus fleet and the OPC UA
        plant replay the same files)."""
        start = clock()
        timeline: list[tuple[float, int | Literal["all"], FaultKind, dict[str, float | str]]] = []
        for e in self.events:
            params: dict[str, float | str] = {
                k: float(v)
                for k, v in (
                    ("delay_s", e.delay_s),
                    ("code", e.code),
                    ("in_s", e.in_s),
                    ("level", e.level),
                    ("reads", e.reads),
                    ("top", e.top),
                )
                if v is not None
            }
            if e.product is not None:
                params["product"] = e.product
            timeline.append((e.at_s, e.meter, e.fault, params))
            if e.duration_s is not None:
                timeline.append((e.at_s + e.duration_s, e.meter, FaultKind.CLEAR, {}))
        for at_s, target, kind, params in sorted(timeline, key=lambda x: x[0]):
            await asyncio.sleep(max(0.0, start + at_s - clock()))
            inject(target, kind, **params)


# --- servers ----------------------------------------------------------------------------------


async def _no_such_unit(*_: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


class MeterFleet:
    """Serves `count` SimMeters; link i listens on base_port + i (TCP transports) or on the
    first end of virtual serial line i (`serial_port_of(i)` is the end for the gateway)."""

    def __init__(
        self,
        count: int,
        base_port: int = 5020,
        host: str = "127.0.0.1",
        *,
        profile: str = "tanji-sim",
        transport: Transport = "tcp",
        units_per_link: int = 1,
        baudrate: int = 9600,
        parity: Literal["N", "E", "O"] = "N",
        clock: Callable[[], float] = time.time,
        journal: Path | None = None,
    ) -> None:
        self._clock = clock
        now = clock()
        self.t0 = now  # epoch seconds: every meter's energy_kwh starts from here
        self.journal = journal  # JSON lines: the start, then each fault (FleetJournal reads it)
        self.host = host
        self.base_port = base_port
        self.transport = transport
        self.units_per_link = units_per_link
        self.baudrate = baudrate
        self.parity = parity  # times the virtual line (a pty itself refuses parity settings)
        self.profile = load_profile(profile)
        self.meters = [
            SimMeter.plausible(i, self.unit_of(i), now, self.profile) for i in range(count)
        ]
        self._points = self.profile.modbus_points([p.name for p in self.profile.points])
        if self.profile.id == "tanji-sim":  # its holding registers are input registers too
            self._points += [
                p.model_copy(update={"function_code": 4})
                for p in self._points
                if p.function_code == 3
            ]
        self._servers: list[ModbusTcpServer | ModbusSerialServer] = []
        self.lines: list[VirtualSerialLine] = []
        self._scenario_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def make_main(self, main: int, fed: Sequence[int], losses: float = 0.01) -> None:
        """Meter `main` becomes a main meter in front of meters `fed`: it measures their
        energy plus `losses` (a fraction), as a feeder's meter does with its cables' losses."""
        meter = self.meters[main]
        meter.feeds = tuple(self.meters[i] for i in fed)
        meter.losses = losses

    @property
    def links(self) -> int:
        return math.ceil(len(self.meters) / self.units_per_link)

    def link_of(self, index: int) -> int:
        return index // self.units_per_link

    def unit_of(self, index: int) -> int:
        """Unit id of meter `index` on its link (1..k; a lone TCP meter answers any unit id)."""
        return 1 + index % self.units_per_link

    def port_of(self, index: int) -> int:
        """TCP port of the link meter `index` is on."""
        return self.base_port + self.link_of(index)

    def serial_port_of(self, index: int) -> str:
        """The serial device the gateway opens to reach meter `index` (transport rtu)."""
        return self.lines[self.link_of(index)].ends[1]

    # --- serving -------------------------------------------------------------------------------

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
        faults = meter.faults
        if faults.silent:
            await self._stopping.wait()  # never answers (until the fleet stops)
            return ExcCodes.DEVICE_FAILURE
        if faults.delay_s:
            await asyncio.sleep(faults.delay_s)
        if faults.exception:
            return ExcCodes(faults.exception)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # a meter's registers are read-only
        t = self._clock()
        if function_code == 1:
            return None  # the relay coil stays open
        if function_code == 2:
            current_registers[0 - start_address] = 1 | int(faults.active) << 1
            return None
        end = address + count
        glitched = False
        for p in self._points:
            if (
                p.function_code == function_code
                and p.address < end
                and p.address + p.count > address
            ):
                if p.bit is not None:
                    continue  # bit fields live in a register another point writes
                first = p.address - start_address
                current_registers[first : first + p.count] = meter.words(p, t)
                glitched = glitched or p.quantity is Quantity.ACTIVE_ENERGY_IMPORT
        if glitched and faults.glitch_reads:
            faults.glitch_reads -= 1  # one answer more shown glitched
        return None

    def _device(self, meter: SimMeter, unit_id: int) -> SimDevice:
        def block(fc: int) -> list[SimData]:
            spans = sorted({(p.address, p.count) for p in self._points if p.function_code == fc})
            data = [
                SimData(address=a, values=[0] * n, datatype=DataType.REGISTERS) for a, n in spans
            ]
            # pymodbus needs every block non-empty: an unused register at the top of the map
            return data or [SimData(address=65535, values=[0], datatype=DataType.REGISTERS)]

        coils = [SimData(address=0, values=[False], datatype=DataType.BITS, readonly=True)]
        inputs = [SimData(address=0, values=[True, False], datatype=DataType.BITS, readonly=True)]
        return SimDevice(
            id=unit_id,
            simdata=(coils, inputs, block(3), block(4)),
            use_bit_addressing=True,
            action=partial(self._on_access, meter),
        )

    async def start(self) -> None:
        if self.journal is not None:
            self.journal.write_text(
                json.dumps({"t0": self.t0, "meters": len(self.meters), "profile": self.profile.id})
                + "\n",
                encoding="utf-8",
            )
        for link in range(self.links):
            members = [m for m in self.meters if self.link_of(m.index) == link]
            lone_tcp = self.transport == "tcp" and self.units_per_link == 1
            devices = [self._device(m, 0 if lone_tcp else m.unit_id) for m in members]
            if self.transport == "tcp" and not lone_tcp:
                # a Modbus TCP gateway answers for absent units: "target device failed to
                # respond" (exception 11, Modbus Application Protocol v1.1b3, section 7)
                devices.append(
                    SimDevice(
                        id=0,
                        simdata=[SimData(address=0, values=[0], datatype=DataType.REGISTERS)],
                        action=_no_such_unit,
                    )
                )
            server: ModbusTcpServer | ModbusSerialServer
            if self.transport == "rtu":
                line = VirtualSerialLine(self.baudrate, 10 if self.parity == "N" else 11)
                await line.start()
                self.lines.append(line)
                server = ModbusSerialServer(
                    devices,
                    framer=FramerType.RTU,
                    port=line.ends[0],
                    baudrate=self.baudrate,
                    ignore_missing_devices=True,  # on a bus, an absent unit is silent
                )
            else:
                framer = FramerType.RTU if self.transport == "rtu-over-tcp" else FramerType.SOCKET
                server = ModbusTcpServer(
                    devices,
                    framer=framer,
                    address=(self.host, self.base_port + link),
                    ignore_missing_devices=self.transport == "rtu-over-tcp",
                )
            await server.serve_forever(background=True)
            self._servers.append(server)

    async def stop(self) -> None:
        self._stopping.set()
        if self._scenario_task is not None:
            self._scenario_task.cancel()
        for server in self._servers:
            try:  # a stand-in that cannot stop must not hold up whoever stops it
                async with asyncio.timeout(SHUTDOWN_S):
                    await server.shutdown()  # type: ignore[no-untyped-call]
            except TimeoutError:
                log.warning("a simulated meter server did not stop within %.0f s", SHUTDOWN_S)
        self._servers.clear()
        for line in self.lines:
            await line.stop()
        self.lines.clear()

    async def __aenter__(self) -> MeterFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- faults --------------------------------------------------------------------------------

    def inject(self, meter: int | Literal["all"], kind: FaultKind, **params: float) -> None:
        if kind in NOT_OVER_MODBUS:
            raise ValueError(f"{kind.value!r} is not simulated by the Modbus meters")
        targets = self.meters if meter == "all" else [self.meters[meter]]
        now = self._clock()
        for m in targets:
            m.inject(kind, now, **params)
        if self.journal is not None:
            event = {"at": now, "meter": meter, "fault": kind.value, "params": params}
            with self.journal.open("a", encoding="utf-8") as f:
                f.write(json.dumps(event) + "\n")

    def play(self, scenario: Scenario) -> None:
        """Replay a scenario's events relative to now, in the background."""
        for event in scenario.events:
            if event.meter != "all" and not 0 <= event.meter < len(self.meters):
                raise ValueError(f"scenario event for meter {event.meter}: no such meter")
            if event.fault in NOT_OVER_MODBUS:
                raise ValueError(f"scenario event {event.fault.value!r} is for the OPC UA plant")
        self._scenario_task = asyncio.get_running_loop().create_task(scenario.replay(self.inject))


class FleetJournal:
    """A fleet's counters as another process knows them: from the journal the serving fleet
    wrote (`MeterFleet(journal=...)`, `tanji sim modbus --journal FILE`), its meters are built
    again with the same start time and every fault is applied at the instant it took effect,
    so `counter_kwh(i, t)` is what meter i's energy counter showed at any t (before the
    register's resolution and wrap). A fault that moves the counter at once (`rollover`,
    `replaced`) is a jump, not energy: `jumps_kwh` sums them over a span."""

    def __init__(self, path: Path) -> None:
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
        head, events = lines[0], lines[1:]
        profile = load_profile(head["profile"])
        self.t0 = float(head["t0"])
        self.meters = [SimMeter.plausible(i, 1, self.t0, profile) for i in range(head["meters"])]
        # per meter, from each instant on: the faults in effect, and the counter's jump then
        self._at: list[list[float]] = [[-math.inf] for _ in self.meters]
        self._state: list[list[tuple[Faults, float]]] = [[(Faults(), 0.0)] for _ in self.meters]
        self.events = len(events)
        for e in events:
            at = float(e["at"])
            targets = range(len(self.meters)) if e["meter"] == "all" else (int(e["meter"]),)
            for i in targets:
                m = self.meters[i]
                before = m.counter_kwh(at)
                m.inject(FaultKind(e["fault"]), at, **e["params"])
                self._at[i].append(at)
                self._state[i].append((dataclasses.replace(m.faults), m.counter_kwh(at) - before))

    def _meter_at(self, index: int, t: float) -> SimMeter:
        meter = self.meters[index]
        meter.faults = self._state[index][bisect.bisect_right(self._at[index], t) - 1][0]
        return meter

    def counter_kwh(self, index: int, t: float) -> float:
        """Meter `index`'s active energy counter at epoch second t, faults included."""
        return self._meter_at(index, t).counter_kwh(t)

    def jumps_kwh(self, index: int, after: float, until: float) -> float:
        """What faults in (after, until] moved meter `index`'s counter at once."""
        first = bisect.bisect_right(self._at[index], after)
        last = bisect.bisect_right(self._at[index], until)
        return sum(jump for _, jump in self._state[index][first:last])
