"""What `tanji demo` ends with: the platform's energy total against the simulated meters'
own counters over the same spans (`totals_match`, within the register's resolution), with
the run's counts, calibration, balances and per-product figures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from cloud_sync import OutboxStats
from gateway.activity import balance
from gateway.activity.aggregation import EXACT
from gateway.activity.allocation import allocate
from gateway.activity.report import per_unit
from gateway.cli.demo_site import KWH, OPCUA_LINE, OPCUA_METER, demo_meter_id
from gateway.config import SiteConfig
from gateway.metrology import uncertainty
from gateway.models import ActivityRecord
from gateway.periods import datetime_to_ns
from gateway.runtime.supervisor import Gateway
from simulators.modbus_fleet import MeterFleet
from simulators.opcua_plant import PlantServer
from simulators.platform import PlatformDesk, PlatformReceiver
from simulators.platform_https import PlatformHttps

ENERGY_RESOLUTION_KWH = Decimal("0.01")  # of the tanji-sim counter register the demo reads


@dataclass
class DemoSummary:
    meters: int
    duration_s: float
    readings_stored: int
    bad_readings: int
    records_created: int
    batches_acked: int
    batches_pending: int
    platform_records: int
    platform_duplicates: int
    platform_kwh_total: str
    simulator_kwh_total: str
    # the periods the totals cover (first start, last end; a run's depend on when it began)
    periods_from: str
    periods_to: str
    difference_kwh: str
    resolution_kwh: str
    totals_match: bool
    platform_kwh_expanded_uncertainty: str  # U (k = 2) of platform_kwh_total, GUM
    calibration: dict[str, str]  # meter -> its calibration status in the last period
    balance: dict[str, int]  # periods of the main meter vs its sub-meters: ok, imbalance, …
    products: dict[str, dict[str, str]]  # line/product -> units, kWh, kWh per unit
    labels: dict[str, dict[str, str]]  # meter -> its label points' last text (product code, …)
    workdir: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DemoParts:
    fleet: MeterFleet
    gateway: Gateway
    platform: PlatformDesk  # the platform simulator's store and verdicts
    config: SiteConfig
    plant: PlantServer | None = None
    # how batches reach the platform: its MQTT receiver or its HTTPS listener
    listener: PlatformReceiver | PlatformHttps | None = None


def _measured_at(boundary_ns: int, boundary: dict[str, Any]) -> int:
    """When the counter had the boundary's value: the boundary itself when a reading was
    there or it is interpolated; else the reading it was held at (before) or the first one
    (after, when nothing was read before the boundary)."""
    distance = int(boundary["distance_ns"] or 0)
    if boundary["interpolated"] or not distance:
        return boundary_ns
    return boundary_ns + distance if boundary["value"] is None else boundary_ns - distance


def _simulator_total(parts: DemoParts) -> Decimal:
    """The meters' own counter advance over the same spans as the platform's records."""
    counters: dict[str, Callable[[float], Decimal]] = {
        demo_meter_id(m.index): m.counter_kwh_at for m in parts.fleet.meters
    }
    if parts.plant is not None:
        plant = parts.plant
        counters[OPCUA_METER] = lambda t: Decimal(plant.energy_kwh(OPCUA_LINE.name, t))
    total = Decimal(0)
    for record in parts.platform.store.records():
        start, end = record["start"], record["end"]
        if record["point"] != "active_energy_import" or start["distance_ns"] is None:
            continue
        counter = counters[str(record["meter_id"])]
        begin = _measured_at(_ns(record["period_start"]), start)
        finish = _measured_at(_ns(record["period_end"]), end)
        total += counter(finish / 1e9) - counter(begin / 1e9)
    return total


def _shown(kwh: Decimal) -> str:
    """kWh for people: at most six decimals (a float counter's exact value has ~50 digits)."""
    return str(kwh.quantize(Decimal("0.000001")) if kwh.as_tuple().exponent < -6 else kwh)  # type: ignore[operator]


def _ns(iso: str) -> int:
    return datetime_to_ns(datetime.fromisoformat(iso))


def summarise(
    parts: DemoParts, stats: OutboxStats, duration_s: float, workdir: Path
) -> DemoSummary:
    """What the platform holds against what the simulated meters counted, and the rest of
    the summary."""
    gateway, platform, config = parts.gateway, parts.platform, parts.config
    with localcontext(EXACT):
        platform_total = sum(
            (v for (_, q), v in platform.store.totals().items() if q == "active_energy_import"),
            Decimal(0),
        )
    sim_total = _simulator_total(parts)
    diff = platform_total - sim_total
    # per meter, the records' sum is the counter's advance between its first and last
    # boundary; each interpolated boundary is within one register step of the truth
    tolerance = 2 * ENERGY_RESOLUTION_KWH * len(config.meters)
    _, platform_records = platform.store.counts()
    received = [ActivityRecord.model_validate(r) for r in platform.store.records()]
    energy = [r for r in received if r.point == "active_energy_import"]
    u_total = _expanded_uncertainty(energy)
    return DemoSummary(
        meters=len(parts.fleet.meters),
        duration_s=duration_s,
        readings_stored=gateway.readings_stored,
        bad_readings=sum(s.bad for s in gateway.meter_status.values()),
        records_created=gateway.records_created,
        batches_acked=stats.acked,
        batches_pending=stats.pending,
        platform_records=platform_records,
        platform_duplicates=platform.counters.duplicates,
        platform_kwh_total=str(platform_total),
        simulator_kwh_total=str(sim_total),
        periods_from=min(r.period_start for r in energy).isoformat() if energy else "",
        periods_to=max(r.period_end for r in energy).isoformat() if energy else "",
        difference_kwh=str(diff),
        resolution_kwh=str(ENERGY_RESOLUTION_KWH),
        totals_match=abs(diff) <= tolerance,
        platform_kwh_expanded_uncertainty="" if u_total is None else f"{2 * u_total:.2g}",
        calibration={r.meter_id: str(r.calibration_status) for r in energy},
        balance={
            state: n
            for b in config.balances
            for state, n in balance.summary(balance.check(b, received)).items()
        },
        products=_products(received),
        labels={
            m: dict(st.last_labels) for m, st in gateway.meter_status.items() if st.last_labels
        },
        workdir=str(workdir),
    )


def _expanded_uncertainty(energy: list[ActivityRecord]) -> Decimal | None:
    """Combined standard uncertainty of the energy total (meters independent), or None when
    a meter's is unknown."""
    per_meter = [
        uncertainty.of_point([r for r in energy if r.meter_id == m])
        for m in sorted({r.meter_id for r in energy})
    ]
    if None in per_meter:
        return None
    return uncertainty.of_independent(u for u in per_meter if u is not None)


def _products(received: list[ActivityRecord]) -> dict[str, dict[str, str]]:
    """Line/product -> units made, kWh and kWh per unit."""
    return {
        f"{p.line}/{p.product}": {
            "units": str(p.output),
            "kwh": _shown(p.energy.get(KWH, Decimal(0))),
            "kwh_per_unit": per_unit(p.per_unit(KWH)),
        }
        for p in allocate(received).products
    }
