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
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from cloud_sync import AckSigner, MqttConfig
from gateway.cli.demo_site import (
    DCC_METER,
    DEMO_STANDARD,
    DEMO_STANDARD_ID,
    MAIN_FROM,
    MAIN_LOSSES,
    OPCUA_LINE,
    demo_site,
    free_port_range,
    write_site,
)
from gateway.cli.demo_summary import DemoParts, DemoSummary, summarise
from gateway.config import SiteConfig
from gateway.metrology.calibration import file_source
from gateway.metrology.dcc import read_dcc
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
