"""`tanji demo`'s chain: simulated meters -> gateway -> MQTT broker (or HTTPS) -> simulated
platform.

Everything runs in one process on 127.0.0.1 with free ports and a work directory of files;
no system service is needed. The summary compares what the platform holds with what the
simulated meters' own counters advanced over exactly the same readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from cloud_sync import AckSigner, MqttConfig, OutboxStats
from gateway.activity import balance
from gateway.activity.aggregation import EXACT
from gateway.activity.allocation import allocate
from gateway.activity.report import per_unit
from gateway.cli.demo_site import (
    DCC_METER,
    DEMO_STANDARD,
    DEMO_STANDARD_ID,
    KWH,
    MAIN_FROM,
    MAIN_LOSSES,
    OPCUA_LINE,
    OPCUA_METER,
    demo_meter_id,
    demo_site,
    free_port_range,
    write_site,
)
from gateway.config import SiteConfig
from gateway.metrology import uncertainty
from gateway.metrology.calibration import file_source
from gateway.metrology.dcc import read_dcc
from gateway.models import ActivityRecord
from gateway.periods import datetime_to_ns
from gateway.runtime.supervisor import Gateway
from simulators.broker import EmbeddedBroker
from simulators.modbus_fleet import MeterFleet
from simulators.opcua_plant import PlantServer
from simulators.pki import CertificateAuthority
from simulators.platform import (
    SIMULATOR_ID,
    PlatformDesk,
    PlatformReceiver,
    PlatformStore,
    ack_signer,
    public_key_path,
)
from simulators.platform_https import HttpsSettings, PlatformHttps

log = logging.getLogger(__name__)


ENERGY_RESOLUTION_KWH = Decimal("0.01")  # of the tanji-sim counter register the demo reads


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
    transport: Literal["mqtt", "https"] = "mqtt",
) -> DemoSummary:
    """Run the whole chain until `duration_s` passes (or cancelled) and summarise it.

    With `broker_port` the chain uses a broker already listening on 127.0.0.1 (the tests'
    Mosquitto); without, it starts the embedded one. Setting `stop` ends the run early,
    with the same orderly drain and summary. `mqtt_extra` adds to the site's `[mqtt]` (TLS
    files, credentials) and `platform_mqtt` is the platform simulator's link (default: the
    site's). With `opcua` a simulated plant adds line 3, read over OPC UA. With `transport`
    "https" the gateway delivers over HTTPS with mutual TLS (certificates made in
    `workdir/pki`) to the platform simulator's HTTPS listener, and no broker runs.
    """
    setup = _set_up(workdir, meters, interval_s, broker_port, mqtt_extra, opcua, transport)
    broker = (
        EmbeddedBroker("127.0.0.1", setup.broker_port)
        if setup.embedded_broker and setup.https is None
        else contextlib.nullcontext()
    )
    fleet = MeterFleet(meters, setup.base_port)
    if meters >= MAIN_FROM:
        fleet.make_main(meters - 1, range(meters - 1), MAIN_LOSSES)
    plant = (
        PlantServer(port=setup.opcua_port, lines=(OPCUA_LINE,))
        if setup.opcua_port is not None
        else contextlib.nullcontext()
    )
    async with broker, fleet, plant:
        started = time.monotonic()  # the chain's time, from when its parts are up
        desk = PlatformDesk(PlatformStore(workdir / "platform.db", SIMULATOR_ID), setup.signer)
        listener = (
            PlatformHttps(desk, setup.https)
            if setup.https is not None
            else PlatformReceiver(
                workdir / "platform.db", platform_mqtt or setup.config.mqtt, desk=desk
            )
        )
        parts = DemoParts(
            fleet,
            demo_gateway(setup.config, meters),
            desk,
            setup.config,
            plant if isinstance(plant, PlantServer) else None,
            listener,
        )
        await _run_chain(parts, stop or asyncio.Event(), started, duration_s, on_tick)
        stats = await parts.gateway.sync.stats()
        await parts.gateway.close()
        return summarise(parts, stats, round(time.monotonic() - started, 1), workdir)


@dataclass(frozen=True)
class _Setup:
    """The demo's site, written to its work directory, and where its parts listen."""

    config: SiteConfig
    signer: AckSigner  # the platform's: the gateway verifies its acks with the public key
    broker_port: int
    embedded_broker: bool
    base_port: int  # of the simulated meters, one port each
    opcua_port: int | None
    https: HttpsSettings | None = None  # the platform's HTTPS listener (transport "https")


def _set_up(
    workdir: Path,
    meters: int,
    interval_s: int,
    broker_port: int | None,
    mqtt_extra: dict[str, Any] | None,
    opcua: bool,
    transport: Literal["mqtt", "https"] = "mqtt",
) -> _Setup:
    embedded = broker_port is None
    if broker_port is None:
        broker_port = free_port_range(1)
    base_port = free_port_range(meters)
    opcua_port = free_port_range(1) if opcua else None
    # the platform signs its acks; the gateway verifies them with its public key
    signer = ack_signer(workdir / "platform-ack.key")
    ack_key = str(public_key_path(workdir / "platform-ack.key"))
    mqtt_extra = {"platform_ack_key": ack_key} | (mqtt_extra or {})
    https, listener = _https_link(workdir, ack_key) if transport == "https" else (None, None)
    site = demo_site(
        workdir,
        meters,
        base_port,
        broker_port,
        interval_s,
        "3.1.1" if embedded else "5",  # the embedded broker (amqtt) speaks MQTT 3.1.1 only
        mqtt_extra,
        opcua_port,
        https=https,
    )
    config = write_site(workdir, site)
    return _Setup(config, signer, broker_port, embedded, base_port, opcua_port, listener)


def _https_link(workdir: Path, ack_key: str) -> tuple[dict[str, Any], HttpsSettings]:
    """The site's `[https]` and the platform's listener on a free port of 127.0.0.1, with a
    CA made for this demo: the platform's server certificate and the gateway's client
    certificate (mutual TLS, as a provincial platform would require)."""
    ca = CertificateAuthority(workdir / "pki", "tanji demo CA")
    server, client = ca.issue("platform", server=True), ca.issue("demo-gw", server=False)
    port = free_port_range(1)
    site = {
        "url": f"https://127.0.0.1:{port}",
        "ca_file": str(ca.cert_path),
        "cert_file": str(client.cert),
        "key_file": str(client.key),
        "platform_ack_key": ack_key,
    }
    return site, HttpsSettings(server.cert, server.key, ca.cert_path, port=port)


def demo_gateway(config: SiteConfig, meters: int) -> Gateway:
    """The demo's gateway, with the reference standard's certificate and M2's DCC registered."""
    gateway = Gateway(config)
    gateway.calibrations.add(DEMO_STANDARD_ID, DEMO_STANDARD, "demo", time.time_ns())
    if meters > DCC_METER:
        import_demo_dcc(gateway, config)
    return gateway


async def _run_chain(
    parts: DemoParts,
    stop: asyncio.Event,
    started: float,
    duration_s: float | None,
    on_tick: Callable[[DemoParts], None] | None,
) -> None:
    """The platform and the gateway, until `stop` or `duration_s` after `started`; then the
    complete periods sealed and acked (an orderly drain) before both stop."""
    gateway, listener = parts.gateway, parts.listener
    assert listener is not None, "the platform takes batches somehow"
    async with asyncio.TaskGroup() as tg:
        platform_task = tg.create_task(listener.run())
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
