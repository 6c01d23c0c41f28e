"""Find the Modbus devices on a link and the meter profiles that fit them.

For each unit id: one probe request (any answer, even a Modbus exception, means a device is
there), then every profile's points are read through the normal collector. A profile fits when
all its default points read good and plausible values; fits are ranked by the share of all
the profile's points that read good. Nothing is written to any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import tomli_w

from collectors.base import Shared
from collectors.modbus.collector import ModbusCollector
from collectors.modbus.config import (
    AnyModbusDevice,
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTcpDevice,
    link_key,
)
from collectors.modbus.link import Failure, ModbusLink, RequestFailed
from collectors.modbus.profiles import Profile, load_profile, profile_ids
from gateway.models import PointKind, QualityStatus, Quantity, Reading

# values no real meter shows: a "fit" reading them is a misread of other registers
_PLAUSIBLE: dict[str, tuple[float, float]] = {
    "active_energy": (0, 1e11),
    "reactive_energy": (0, 1e11),
    "active_power": (-1e6, 1e6),
    "voltage": (0, 1e6),
    "current": (0, 1e6),
    "frequency": (40, 70),
    "power_factor": (-1, 1),
}


@dataclass
class ProfileFit:
    profile: Profile
    good: int
    total: int
    fits: bool
    sample: dict[str, Decimal] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.good / self.total


@dataclass
class UnitFinding:
    unit_id: int
    answered: bool
    reason: str  # how the probe was answered
    fits: list[ProfileFit] = field(default_factory=list)

    @property
    def best(self) -> ProfileFit | None:
        fitting = [f for f in self.fits if f.fits]
        return max(fitting, key=lambda f: f.score) if fitting else None


def _plausible(r: Reading) -> bool:
    if r.value is None:
        return False
    v = float(r.value)
    if not math.isfinite(v):
        return False
    if r.kind is PointKind.COUNTER and v < 0:
        return False
    for prefix, (lo, hi) in _PLAUSIBLE.items():
        if r.quantity.value.startswith(prefix):
            return lo <= v <= hi
    return True


async def probe(link: ModbusLink, unit_id: int, timeout_s: float) -> tuple[bool, str]:
    """Is anything answering as `unit_id`? One read of holding register 0."""
    async with link.lock:
        try:
            await link.read(unit_id, 3, 0, 1, timeout_s)
        except RequestFailed as failure:
            if failure.kind is Failure.EXCEPTION:
                code = failure.code or 0
                # a gateway saying the target did not answer means there is no such unit
                return code not in (10, 11), failure.reason
            return False, failure.reason
    return True, "answered"


async def fit(device: AnyModbusDevice, profile: Profile, shared: Shared) -> ProfileFit:
    names = [p.name for p in profile.points]
    candidate = type(device).model_validate(
        {
            "protocol": device.protocol,
            "connection": device.connection.model_dump(),
            "profile": profile.id,
            "profile_points": names,
        }
    )
    collector = ModbusCollector.from_spec("discover", candidate, lambda: 0, shared)
    readings = await collector.poll_once()
    good = {r.point: r for r in readings if r.quality.status is QualityStatus.GOOD}
    defaults = profile.device.default_points
    fits = all(n in good and _plausible(good[n]) for n in defaults)
    sample = {n: v for n in defaults if n in good and (v := good[n].value) is not None}
    return ProfileFit(profile, len(good), len(names), fits, sample)


async def discover(
    device: AnyModbusDevice,
    unit_ids: Sequence[int],
    profiles: Sequence[str] | None = None,
    progress: Callable[[int], None] = lambda _: None,
) -> list[UnitFinding]:
    """Probe each unit id through `device`'s connection and rank the profiles that fit.

    Raises RequestFailed (kind CONNECT) when the link cannot be opened at all; a connection
    lost later in the scan only marks the units it hid as not answering."""
    shared = Shared()
    link = shared.get(
        "modbus:" + "|".join(link_key(device)), ModbusLink, lambda: ModbusLink(device.connection)
    )
    chosen = [load_profile(p) for p in (profiles or profile_ids())]
    findings = []
    try:
        for n, unit_id in enumerate(unit_ids):
            progress(unit_id)
            answered, reason = await probe(link, unit_id, device.connection.timeout_s)
            if n == 0 and reason == "connect-failed":
                raise RequestFailed(Failure.CONNECT, reason)
            finding = UnitFinding(unit_id, answered, reason)
            if answered:
                at_unit = device.model_copy(
                    update={"connection": device.connection.model_copy(update={"unit_id": unit_id})}
                )
                finding.fits = [await fit(at_unit, p, shared) for p in chosen]
            findings.append(finding)
    finally:
        shared.close()
    return findings


def site_fragment(device: AnyModbusDevice, findings: Sequence[UnitFinding]) -> str:
    """A `[[meters]]` block per unit whose best profile fits, for site.toml. Serial and
    accuracy class are left empty on purpose: check-config will ask for them."""
    meters: list[dict[str, Any]] = []
    for f in findings:
        best = f.best
        if best is None:
            continue
        # the scan's own timeout and retries are not what a site should run with
        conn = device.connection.model_dump(
            mode="json", exclude_defaults=True, exclude={"unit_id", "timeout_s", "retries"}
        )
        conn["unit_id"] = f.unit_id
        energy = any(
            p.quantity in (Quantity.ACTIVE_ENERGY_IMPORT, Quantity.ACTIVE_ENERGY_EXPORT)
            for p in best.profile.points
        )
        meters.append(
            {
                "id": f"unit-{f.unit_id}",
                "serial": "",
                "model": f"{best.profile.manufacturer} {best.profile.model}",
                "carrier": "electricity" if energy else "production",
                "accuracy_class": "",
                "protocol": device.protocol,
                "profile": best.profile.id,
                "connection": conn,
            }
        )
    if not meters:
        return ""
    header = (
        "# found by `tanji discover`; fill in serial and accuracy_class from the nameplate,\n"
        "# and check the profile's notes (collectors/modbus/profiles/) before relying on it\n"
    )
    return header + tomli_w.dumps({"meters": meters})


def device_for_link(protocol: str, connection: dict[str, Any]) -> AnyModbusDevice:
    """A placeholder device (one dummy point) that carries a link's connection settings;
    pydantic's ValidationError says what is wrong with them."""
    placeholder = {
        "quantity": "status",
        "kind": "gauge",
        "unit": "1",
        "address": 0,
        "data_type": "uint16",
    }
    data = {"protocol": protocol, "connection": connection, "points": [placeholder]}
    if protocol == "modbus_rtu":
        return ModbusRtuDevice.model_validate(data)
    if protocol == "modbus_rtu_over_tcp":
        return ModbusRtuOverTcpDevice.model_validate(data)
    return ModbusTcpDevice.model_validate(data)
