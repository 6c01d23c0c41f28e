"""A simulated plant behind an OPC UA server (asyncua): production lines, each with an energy
meter (kWh counter, kW) and production data (units made, the current product code and
production order, which a changeover switches).

Node ids are strings in the plant's namespace `urn:tanji:sim:plant`, e.g.
`nsu=urn:tanji:sim:plant;s=Line1.Meter.ActiveEnergyImport`. `filler_namespaces` registers
other namespaces first, so the plant's namespace *index* differs from one start to the next
while its URI and the node ids stay: what a real server's restart may do, and why tanji
addresses nodes by namespace URI. Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography.hazmat.primitives import serialization

from collectors.opcua import (
    OPERATION_LIMITS,
    ApplicationCertificate,
    create_application_certificate,
    load_certificate,
)
from simulators.modbus_fleet import FaultKind, Scenario

PLANT_NS = "urn:tanji:sim:plant"
# Engineering units per OPC UA Part 8 (EUInformation, UNECE Recommendation 20 common codes;
# UnitId = the code's three ASCII letters as a 24-bit number)
UNECE = "http://www.opcfoundation.org/UA/units/un/cefact"


def eu(code: str, display: str, description: str) -> ua.EUInformation:
    unit_id = (ord(code[0]) << 16) | (ord(code[1]) << 8) | ord(code[2])
    return ua.EUInformation(
        NamespaceUri=UNECE,
        UnitId=unit_id,
        DisplayName=ua.LocalizedText(display),
        Description=ua.LocalizedText(description),
    )


KWH = eu("KWH", "kWh", "kilowatt hour")
KW = eu("KWT", "kW", "kilowatt")
UNIT = eu("C62", "1", "one (a count)")


@dataclass(frozen=True)
class LineSpec:
    """One simulated line: its mean draw, output rate and product."""

    name: str
    kw: float
    units_per_min: float
    product: str


DEFAULT_LINES = (
    LineSpec("Line1", 42.0, 12.0, "CELL-A"),
    LineSpec("Line2", 18.5, 30.0, "MODULE-X"),
)


PLANT_APPLICATION_URI = "urn:tanji:sim:plant:server"
SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


@dataclass(frozen=True)
class PlantSecurity:
    """The plant server's security: its own certificate (made in `workdir`), every secure
    policy and mode beside None, and who may log in: users by password and/or by user
    certificate (X.509 identity). With any users configured, anonymous sessions are refused."""

    workdir: Path
    users: tuple[tuple[str, str], ...] = ()  # (username, password)
    user_certificates: tuple[Path, ...] = ()


class _Users(UserManager):
    """asyncua user manager: the configured passwords and user certificates."""

    def __init__(self, security: PlantSecurity) -> None:
        self.passwords = dict(security.users)
        self.certificates = {
            load_certificate(p).public_bytes(serialization.Encoding.DER)
            for p in security.user_certificates
        }

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:  # `certificate` is then the channel's, not an identity
            known = self.passwords.get(username) == password
            return User(role=UserRole.User, name=username) if known else None
        if certificate is not None:  # an X.509 identity token's certificate (verified)
            der = (
                certificate
                if isinstance(certificate, bytes)
                else certificate.public_bytes(serialization.Encoding.DER)
            )
            known = der in self.certificates
            return User(role=UserRole.User, name="certificate") if known else None
        return None


# faults a plant line takes from the Modbus simulator's scenario files (docs/simulators.md):
# the status its variables then carry (a PLC reporting on the meter behind it)
FAULT_STATUS = {
    FaultKind.SILENT: StatusCodes.BadCommunicationError,  # the meter stopped answering
    FaultKind.EXCEPTION: StatusCodes.BadDeviceFailure,
    FaultKind.BUSY: StatusCodes.UncertainLastUsableValue,
}
# a register's timing, wrap and read glitches: the plant serves typed variables, not registers
NOT_OVER_OPCUA = (FaultKind.SLOW, FaultKind.ROLLOVER, FaultKind.GLITCH)


@dataclass
class _Segment:
    """From `t` on, a line's counters start at `energy`/`units` and run (or stand still)."""

    t: float
    energy: float
    units: float
    running: bool


def _nid(path: str, idx: int) -> ua.NodeId:
    return ua.NodeId(ua.String(path), ua.Int16(idx))


def node_id(path: str) -> str:
    """The configuration form of a plant node: namespace URI and string id."""
    return f"nsu={PLANT_NS};s={path}"


class PlantServer:
    """`async with PlantServer(port=...)`: serves the plant until the block ends."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 4840,
        lines: tuple[LineSpec, ...] = DEFAULT_LINES,
        filler_namespaces: int = 0,
        tick_s: float = 0.5,
        security: PlantSecurity | None = None,
        max_per_call: int | None = None,
    ) -> None:
        self.endpoint = f"opc.tcp://{host}:{port}/tanji/plant"
        self.lines = lines
        self.filler_namespaces = filler_namespaces
        self.tick_s = tick_s
        self.security = security
        # MaxNodesPerRead and MaxMonitoredItemsPerCall, advertised and enforced (asyncua
        # advertises 10000 and enforces nothing; real servers refuse larger requests whole)
        self.max_per_call = max_per_call
        self.certificate: Path | None = None  # the server's, when secured
        self.server: Server | None = None
        self.namespace_index: int | None = None
        self._variables: dict[str, Any] = {}
        t0 = time.time()  # the counters are functions of wall-clock time since then
        self._segments = {line.name: [_Segment(t0, 0.0, 0.0, True)] for line in lines}
        self._status: dict[str, int | None] = {line.name: None for line in lines}
        self._noise: dict[str, float] = {line.name: 0.0 for line in lines}
        # what each line makes now, under which production order (a changeover starts the next)
        self._product = {line.name: line.product for line in lines}
        self._orders = {line.name: 1 for line in lines}
        self._task: asyncio.Task[None] | None = None
        self._scenario_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PlantServer:
        sec = self.security
        users = _Users(sec) if sec and (sec.users or sec.user_certificates) else None
        server = Server(user_manager=users)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("tanji simulated plant (not a real device)")
        if sec is not None:
            cert = ApplicationCertificate(
                sec.workdir / "tanji-plant.der",
                sec.workdir / "tanji-plant.key.pem",
                PLANT_APPLICATION_URI,
            )
            if not (cert.certificate.exists() and cert.private_key.exists()):  # else: keep it,
                cert = create_application_certificate(  # so trust survives a restart
                    sec.workdir, PLANT_APPLICATION_URI, "tanji simulated plant", 365, "tanji-plant"
                )
            await server.set_application_uri(PLANT_APPLICATION_URI)
            await server.load_certificate(str(cert.certificate))
            await server.load_private_key(str(cert.private_key))
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity, *SECURE_POLICIES])
            tokens: list[type] = []
            if sec.users:
                tokens.append(ua.UserNameIdentityToken)
            if sec.user_certificates:
                tokens.append(ua.X509IdentityToken)
            server.set_identity_tokens(tokens or [ua.AnonymousIdentityToken])
            self.certificate = cert.certificate
        if self.max_per_call is not None:
            await self._limit_requests(server, self.max_per_call)
        for i in range(self.filler_namespaces):
            await server.register_namespace(f"urn:tanji:sim:filler:{i}")
        idx = self.namespace_index = await server.register_namespace(PLANT_NS)
        plant = await server.nodes.objects.add_object(_nid("Plant", idx), "Plant")
        for line in self.lines:
            obj = await plant.add_object(_nid(line.name, idx), line.name)
            meter = await obj.add_object(_nid(f"{line.name}.Meter", idx), "EnergyMeter")
            production = await obj.add_object(_nid(f"{line.name}.Production", idx), "Production")
            await self._variable(meter, f"{line.name}.Meter.ActiveEnergyImport", 0.0, KWH)
            await self._variable(meter, f"{line.name}.Meter.ActivePower", line.kw, KW)
            await self._variable(
                production,
                f"{line.name}.Production.UnitsProduced",
                ua.Variant(0, ua.VariantType.UInt32),
                UNIT,
            )
            await self._variable(production, f"{line.name}.Production.ProductCode", line.product)
            await self._variable(
                production, f"{line.name}.Production.ProductionOrder", self.order(line.name)
            )
        self.server = server
        await server.start()
        self._task = asyncio.create_task(self._run())
        return self

    @staticmethod
    async def _limit_requests(server: Server, limit: int) -> None:
        """Reads and monitored item creations of more than `limit` nodes fail with
        BadTooManyOperations, as OPC UA Part 4 has a server answer them."""
        for limit_id in OPERATION_LIMITS:  # the nodes a client reads them from
            node = server.get_node(ua.NodeId(ua.Int32(limit_id)))
            await node.write_value(ua.Variant(limit, ua.VariantType.UInt32))
        iserver = server.iserver
        create_session = iserver.create_session

        def limited_session(*args: Any, **kwargs: Any) -> Any:
            session = create_session(*args, **kwargs)
            read, create_items = session.read, session.create_monitored_items

            async def checked_read(params: ua.ReadParameters) -> Any:
                if len(params.NodesToRead) > limit:
                    raise ServiceError(StatusCodes.BadTooManyOperations)
                return await read(params)

            async def checked_items(params: ua.CreateMonitoredItemsParameters) -> Any:
                if len(params.ItemsToCreate) > limit:
                    raise ServiceError(StatusCodes.BadTooManyOperations)
                return await create_items(params)

            session.read = checked_read  # type: ignore[method-assign]
            session.create_monitored_items = checked_items  # type: ignore[method-assign]
            return session

        iserver.create_session = limited_session  # type: ignore[method-assign]

    async def _variable(
        self, parent: Any, path: str, value: Any, unit: ua.EUInformation | None = None
    ) -> None:
        idx = self.namespace_index
        assert idx is not None
        var = await parent.add_variable(_nid(path, idx), path.rsplit(".", 1)[-1], value)
        if unit is not None:
            await var.add_property(_nid(f"{path}.EngineeringUnits", idx), "EngineeringUnits", unit)
        self._variables[path] = var

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.time()
            for line in self.lines:
                energy = ua.Variant(self.energy_kwh(line.name, now), ua.VariantType.Double)
                units = ua.Variant(self.units(line.name, now), ua.VariantType.UInt32)
                kw = line.kw * (1 + random.uniform(-1, 1) * self._noise[line.name])
                power = ua.Variant(kw, ua.VariantType.Double)
                await self._write(f"{line.name}.Meter.ActiveEnergyImport", energy, now, line.name)
                await self._write(f"{line.name}.Meter.ActivePower", power, now, line.name)
                await self._write(f"{line.name}.Production.UnitsProduced", units, now, line.name)
                for path, text in (("ProductCode", self._product[line.name]),
                                   ("ProductionOrder", self.order(line.name))):  # fmt: skip
                    await self._write(
                        f"{line.name}.Production.{path}",
                        ua.Variant(text, ua.VariantType.String),
                        now,
                        line.name,
                    )

    async def _write(self, path: str, value: ua.Variant, at: float, line: str) -> None:
        """The value with the time it is the value for as its source timestamp, and the
        line's fault status if it has one."""
        when: Any = datetime.fromtimestamp(at, UTC)  # asyncua types it DateTime, takes datetime
        code = self._status[line]
        status = ua.StatusCode(ua.UInt32(code if code is not None else StatusCodes.Good))
        await self._variables[path].write_value(
            ua.DataValue(value, StatusCode=status, SourceTimestamp=when, ServerTimestamp=when)
        )

    def order(self, line: str) -> str:
        """The production order line `line` runs under now (made up: `Line1-PO00001`)."""
        return f"{line}-PO{self._orders[line]:05d}"

    def product(self, line: str) -> str:
        return self._product[line]

    def changeover(self, line: int, product: str) -> None:
        """Line `line` (0-based) starts making `product` under a new production order; the
        server shows both from its next tick."""
        self.inject(line, FaultKind.CHANGEOVER, product=product)

    def _line(self, name: str) -> LineSpec:
        return next(line for line in self.lines if line.name == name)

    def _segment(self, line: str, t: float) -> _Segment:
        segments = self._segments[line]
        return next((s for s in reversed(segments) if s.t <= t), segments[0])

    def energy_kwh(self, line: str, at: float | None = None) -> float:
        """The line's energy counter at Unix time `at` (default now): it runs at `kw`."""
        t = time.time() if at is None else at
        seg = self._segment(line, t)
        run = max(0.0, t - seg.t) if seg.running else 0.0
        return seg.energy + self._line(line).kw * run / 3600

    def units(self, line: str, at: float | None = None) -> int:
        t = time.time() if at is None else at
        seg = self._segment(line, t)
        run = max(0.0, t - seg.t) if seg.running else 0.0
        return int(seg.units + self._line(line).units_per_min * run / 60)

    def inject(self, line: int | Literal["all"], kind: FaultKind, **params: float | str) -> None:
        """A fault on line `line` (0-based) or all: the Modbus simulator's kinds, as far as
        they mean something behind an OPC UA server (slow and rollover do not), and a product
        changeover (`product`)."""
        if kind in NOT_OVER_OPCUA:
            raise ValueError(f"fault {kind.value!r} is not simulated over OPC UA")
        names = [x.name for x in self.lines] if line == "all" else [self.lines[line].name]
        now = time.time()
        for name in names:
            energy = self.energy_kwh(name, now)
            units = float(self.units(name, now))
            match kind:
                case FaultKind.FROZEN:
                    self._segments[name].append(_Segment(now, energy, units, False))
                case FaultKind.REPLACED:
                    self._segments[name].append(_Segment(now, 0.0, 0.0, True))
                case FaultKind.NOISE:
                    self._noise[name] = float(params.get("level", 0.05))
                case FaultKind.CHANGEOVER:
                    self._product[name] = str(params["product"])
                    self._orders[name] += 1
                case FaultKind.CLEAR:
                    if not self._segment(name, now).running:
                        self._segments[name].append(_Segment(now, energy, units, True))
                    self._status[name] = None
                    self._noise[name] = 0.0
                case _:
                    self._status[name] = FAULT_STATUS[kind]

    def play(self, scenario: Scenario) -> None:
        """Replay a scenario file's events (meter index = line index) relative to now."""
        for event in scenario.events:
            if event.meter != "all" and not 0 <= event.meter < len(self.lines):
                raise ValueError(f"scenario event for line {event.meter}: no such line")
            if event.fault in NOT_OVER_OPCUA:
                raise ValueError(f"fault {event.fault.value!r} is not simulated over OPC UA")
        self._scenario_task = asyncio.get_running_loop().create_task(scenario.replay(self.inject))

    async def __aexit__(self, *exc: object) -> None:
        if self._scenario_task is not None:
            self._scenario_task.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.server is not None:
            await self.server.stop()
            self.server = None
