"""`tanji demo`: simulated meters -> gateway -> embedded MQTT broker -> simulated platform.

Everything runs in one process on 127.0.0.1 with free ports and a work directory of files;
no system service is needed. The summary compares what the platform holds with what the
simulated meters' own counters advanced over exactly the same readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from cloud_sync.transport import MqttConfig
from gateway.activity import balance
from gateway.activity.aggregation import EXACT
from gateway.activity.allocation import allocate
from gateway.activity.report import per_unit
from gateway.config import SiteConfig, parse_site_config
from gateway.metrology import uncertainty
from gateway.metrology.calibration import file_source
from gateway.metrology.dcc import read_dcc
from gateway.models import ActivityRecord, CalibrationRecord
from gateway.periods import datetime_to_ns
from gateway.runtime.supervisor import Gateway
from simulators.broker import EmbeddedBroker
from simulators.modbus_fleet import MeterFleet, rated_kw
from simulators.opcua_plant import LineSpec, PlantServer, node_id
from simulators.platform import PlatformReceiver, ack_signer, public_key_path

log = logging.getLogger(__name__)

ENERGY_RESOLUTION_KWH = Decimal("0.01")  # of the tanji-sim counter register the demo reads

DEMO_USCC = "91320000MA1TANJ0D7"  # a made-up code with a valid GB 32100 check character


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """First port of `count` consecutive ports that are free on `host` right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


# the reference standard the demo meters were verified against: its own certificate goes into
# the registry under `std:`, so `tanji trace` reaches a (simulated) national standard
DEMO_STANDARD_ID = "std:demo-energy-standard"
DEMO_STANDARD = CalibrationRecord(
    certificate_no="DEMO-STD-0001",
    lab="demo national metrology institute (simulated)",
    accreditation_no="national metrology institute (simulated)",
    calibration_date=date.today() - timedelta(days=200),
    due_date=date.today() + timedelta(days=530),
    expanded_uncertainty="0.02 %",
    coverage_factor=2.0,
    reference_standard="national primary standard of electric energy (simulated)",
    reference_standard_is_national=True,
)

# M2's certificate is a Digital Calibration Certificate (gateway/data/demo/README.md),
# imported when the demo starts, due in 20 days
DCC_METER = 1
DCC_FILE = "M2.dcc.xml"


def import_demo_dcc(gateway: Gateway, config: SiteConfig) -> None:
    content = resources.files("gateway").joinpath("data", "demo", DCC_FILE).read_bytes()
    meter, record = read_dcc(
        content,
        max(date.today() + timedelta(days=20), date(2026, 1, 11)),  # after its calibration
        {m.serial: m.id for m in config.meters},
    )
    source, now = file_source(Path(DCC_FILE), content), time.time_ns()
    registered = gateway.calibrations.standing(meter, record.certificate_no)
    if registered is not None and registered.record != record:  # a rerun on another day
        reason = "demo restarted: due date moved"
        gateway.calibrations.supersede(meter, record.certificate_no, record, reason, source, now)
    else:
        gateway.calibrations.add(meter, record, source, now)


# production counters of the tanji-sim map (docs/simulators.md) and what they count
KWH = ("electricity", "kWh")
MAIN_FROM = 4  # with this many meters or more, the last is a main meter in front of the rest
MAIN_LOSSES = 0.01  # the simulated feeder's losses between the main meter and the others
DEMO_COUNTER_ADDRESS = {"units_a": 41, "units_b": 43}
DEMO_PRODUCTS = {0: {"units_a": "cell-a", "units_b": "cell-b"}, 1: {"units_a": "module-x"}}
# the OPC UA line: a simulated plant's line (simulators/opcua_plant.py) read by subscription
OPCUA_METER = "P1"
OPCUA_LINE = LineSpec("Line1", kw=24.0, units_per_min=90.0, product="pack-z")


def opcua_meter(port: int, cal_date: date) -> dict[str, Any]:
    """The demo's OPC UA meter on line 3: energy, the units it made and the product code and
    production order it made them under, by subscription."""
    return {
        "id": OPCUA_METER,
        "serial": "SIM-OPC-00001",
        "model": "tanji simulated plant meter (not a real product)",
        "carrier": "electricity",
        "accuracy_class": "1",
        "line": "line-3",
        "rated_power_kw": Decimal("60"),  # the plant's Line1 draws 42 kW
        "protocol": "opcua",
        "calibration": _certificate(90, cal_date),
        "connection": {
            "endpoint": f"opc.tcp://127.0.0.1:{port}/tanji/plant",
            "poll_interval_s": 1.0,
            "timeout_s": 2.0,
        },
        "points": [
            {
                "quantity": "active_energy_import",
                "kind": "counter",
                "unit": "kWh",
                "node": node_id(f"{OPCUA_LINE.name}.Meter.ActiveEnergyImport"),
            },
            {
                "quantity": "active_power",
                "kind": "gauge",
                "unit": "kW",
                "node": node_id(f"{OPCUA_LINE.name}.Meter.ActivePower"),
            },
            {
                "name": "units",
                "quantity": "production_count",
                "kind": "counter",
                "unit": "unit",
                "node": node_id(f"{OPCUA_LINE.name}.Production.UnitsProduced"),
                "data_type": "integer",
                "product": OPCUA_LINE.product,
                "max_rate_per_h": Decimal(60 * OPCUA_LINE.units_per_min * 2),  # twice its pace
            },
            {
                "quantity": "product_code",
                "node": node_id(f"{OPCUA_LINE.name}.Production.ProductCode"),
            },
            {
                "quantity": "production_order",
                "node": node_id(f"{OPCUA_LINE.name}.Production.ProductionOrder"),
            },
        ],
    }


def demo_meter_id(index: int) -> str:
    """Site meter id of the fleet's meter `index`."""
    return f"M{index + 1}"


def _certificate(i: int, cal_date: date) -> dict[str, Any]:
    """A demo meter's (simulated) verification certificate, as site.toml holds it."""
    return {
        "certificate_no": f"DEMO-CAL-{i + 1:04d}",
        "kind": "verification",
        "lab": "demo calibration lab (simulated, not a real certificate)",
        "accreditation_no": "CNAS L0000 (simulated)",
        "calibration_date": cal_date,
        "due_date": cal_date + timedelta(days=365),
        "reference_standard": "three-phase electric energy standard (simulated)",
        "reference_standard_certificate": DEMO_STANDARD.certificate_no,
        "reference_standard_lab": DEMO_STANDARD.lab,
    }


def demo_site(
    workdir: Path,
    meters: int,
    base_port: int,
    broker_port: int,
    interval_s: int,
    mqtt_protocol: str = "5",
    mqtt_extra: dict[str, Any] | None = None,
    opcua_port: int | None = None,
) -> dict[str, Any]:
    """The demo's site configuration, as a site.toml would hold it (plaintext MQTT: the
    demo's broker listens on 127.0.0.1 only)."""
    today = date.today()
    site_meters = []
    main = meters - 1 if meters >= MAIN_FROM else None
    for i in range(meters):
        # M1 calibrated 120 days ago, M3's certificate expired; M2's is a DCC (below)
        cal_date = today - timedelta(days=500 if i == 2 else 120)
        # M1 and M2 feed one line each, with the line's production counters (two products on
        # line 1); M3 serves both lines, half each; the main meter (from 4 meters on, the
        # last) serves no line: it is there for the energy balance
        where: dict[str, Any] = (
            {}
            if i == main
            else {"lines": {"line-1": Decimal("0.5"), "line-2": Decimal("0.5")}}
            if i == 2
            else {"line": f"line-{i % 2 + 1}"}
        )
        products = DEMO_PRODUCTS.get(i, {})
        site_meters.append(
            {
                "id": demo_meter_id(i),
                "serial": f"SIM-{i + 1:05d}",
                "model": "tanji simulated meter (not a real product)",
                "carrier": "electricity",
                "accuracy_class": "0.5S" if i == main else "1",
                # steps faster than 1.2 x this are implausible (gateway/activity/counters.py)
                "rated_power_kw": Decimal(
                    str(
                        sum(rated_kw(k) for k in range(meters - 1)) * (1 + MAIN_LOSSES)
                        if i == main
                        else rated_kw(i)
                    )
                ),
                **where,
                "protocol": "modbus_tcp",
                **({} if i == DCC_METER else {"calibration": _certificate(i, cal_date)}),
                "connection": {
                    "host": "127.0.0.1",
                    "port": base_port + i,
                    "poll_interval_s": 1.0,
                    "timeout_s": 1.0,
                },
                "profile": "tanji-sim",  # default points: active_energy_import, active_power
                **(
                    {
                        "points": [
                            {
                                "name": register,
                                "quantity": "production_count",
                                "kind": "counter",
                                "unit": "unit",
                                "address": DEMO_COUNTER_ADDRESS[register],
                                "data_type": "uint32",
                                "product": product,
                                # the simulated line makes up to rated_kw / 100 units a second
                                "max_rate_per_h": Decimal(str(rated_kw(i) * 36 * 2)),
                            }
                            for register, product in products.items()
                        ]
                    }
                    if products
                    else {}
                ),
            }
        )
    if opcua_port is not None:
        site_meters.append(opcua_meter(opcua_port, today - timedelta(days=60)))
    return {
        "enterprise": {"name": "Demo Factory (simulated)", "uscc": DEMO_USCC},
        "gateway_id": "demo-gw",
        "meters": site_meters,
        "store": {"path": str(workdir / "gateway.db"), "commit_interval_s": 1.0},
        "aggregation": {"interval": f"{interval_s}s", "grace_s": 2.0},
        "mqtt": {
            "broker_url": f"mqtt://127.0.0.1:{broker_port}",
            "protocol": mqtt_protocol,
            "ack_timeout_s": 10.0,
            **(mqtt_extra or {}),
        },
        "balances": (
            [{"main": demo_meter_id(main), "subs": [demo_meter_id(i) for i in range(main)]}]
            if main is not None
            else []
        ),
    }


def write_site(workdir: Path, site: dict[str, Any]) -> SiteConfig:
    """Validate a demo site (`demo_site`) and write it as site.toml (for check-config and
    `tanji run`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = parse_site_config(site, "demo site")
    (workdir / "site.toml").write_text(tomli_w.dumps(site), encoding="utf-8")
    return config


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
    platform: PlatformReceiver
    config: SiteConfig
    plant: PlantServer | None = None


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


async def run_demo(
    workdir: Path,
    meters: int = 4,
    interval_s: int = 10,
    duration_s: float | None = None,
    on_tick: Callable[[DemoParts], None] | None = None,
    broker_port: int | None = None,
    stop: asyncio.Event | None = None,
    mqtt_extra: dict[str, Any] | None = None,
    platform_mqtt: MqttConfig | None = None,
    opcua: bool = True,
) -> DemoSummary:
    """Run the whole chain until `duration_s` passes (or cancelled) and summarise it.

    With `broker_port` the chain uses a broker already listening on 127.0.0.1 (the tests'
    Mosquitto); without, it starts the embedded one. Setting `stop` ends the run early,
    with the same orderly drain and summary. `mqtt_extra` adds to the site's `[mqtt]` (TLS
    files, credentials) and `platform_mqtt` is the platform simulator's link (default: the
    site's). With `opcua` a simulated plant adds line 3, read over OPC UA.
    """
    stop = stop or asyncio.Event()
    embedded = broker_port is None
    if broker_port is None:
        broker_port = free_port_range(1)
    base_port = free_port_range(meters)
    # the embedded broker (amqtt) speaks MQTT 3.1.1 only; Mosquitto takes 5
    opcua_port = free_port_range(1) if opcua else None
    # the platform signs its acks; the gateway verifies them with its public key
    signer = ack_signer(workdir / "platform-ack.key")
    mqtt_extra = {"platform_ack_key": str(public_key_path(workdir / "platform-ack.key"))} | (
        mqtt_extra or {}
    )
    site = demo_site(
        workdir,
        meters,
        base_port,
        broker_port,
        interval_s,
        "3.1.1" if embedded else "5",
        mqtt_extra,
        opcua_port,
    )
    config = write_site(workdir, site)
    broker = EmbeddedBroker("127.0.0.1", broker_port) if embedded else contextlib.nullcontext()
    fleet = MeterFleet(meters, base_port)
    if meters >= MAIN_FROM:
        fleet.make_main(meters - 1, range(meters - 1), MAIN_LOSSES)
    plant = (
        PlantServer(port=opcua_port, lines=(OPCUA_LINE,))
        if opcua_port is not None
        else contextlib.nullcontext()
    )
    async with broker, fleet, plant:
        started = time.monotonic()  # the chain's time, from when its parts are up
        platform = PlatformReceiver(
            workdir / "platform.db", platform_mqtt or config.mqtt, signer=signer
        )
        gateway = Gateway(config)
        gateway.calibrations.add(DEMO_STANDARD_ID, DEMO_STANDARD, "demo", time.time_ns())
        if meters > DCC_METER:
            import_demo_dcc(gateway, config)
        parts = DemoParts(
            fleet, gateway, platform, config, plant if isinstance(plant, PlantServer) else None
        )
        async with asyncio.TaskGroup() as tg:
            platform_task = tg.create_task(platform.run())
            gateway_task = tg.create_task(gateway.run())
            try:
                while not stop.is_set() and (
                    duration_s is None or time.monotonic() - started < duration_s
                ):
                    if on_tick:
                        on_tick(parts)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
            finally:
                # seal the complete periods and let the platform ack them before stopping
                with contextlib.suppress(Exception):
                    await asyncio.shield(gateway.drain(timeout_s=20.0))
                gateway_task.cancel()
                platform_task.cancel()
        stats = await gateway.sync.stats()
        await gateway.close()
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
        allocation = allocate(received)
        energy = [r for r in received if r.point == "active_energy_import"]
        per_meter = [
            uncertainty.of_point([r for r in energy if r.meter_id == m])
            for m in sorted({r.meter_id for r in energy})
        ]
        u_total = (
            uncertainty.of_independent(u for u in per_meter if u is not None)
            if None not in per_meter
            else None
        )
        return DemoSummary(
            meters=meters,
            duration_s=round(time.monotonic() - started, 1),
            readings_stored=gateway.readings_stored,
            bad_readings=sum(s.bad for s in gateway.meter_status.values()),
            records_created=gateway.records_created,
            batches_acked=stats.acked,
            batches_pending=stats.pending,
            platform_records=platform_records,
            platform_duplicates=platform.counters.duplicates,
            platform_kwh_total=str(platform_total),
            simulator_kwh_total=str(sim_total),
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
            products={
                f"{p.line}/{p.product}": {
                    "units": str(p.output),
                    "kwh": _shown(p.energy.get(KWH, Decimal(0))),
                    "kwh_per_unit": per_unit(p.per_unit(KWH)),
                }
                for p in allocation.products
            },
            labels={
                m: dict(st.last_labels) for m, st in gateway.meter_status.items() if st.last_labels
            },
            workdir=str(workdir),
        )
