"""The OPC UA collector against the simulated plant (a real asyncua server on loopback):
subscriptions and polling, status codes as quality, refused nodes reported once, a server
restart that renumbers its namespaces, a lost session, and production counters, product codes
and production orders in the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from collectors.opcua import OpcUaCollector, OpcUaDevice
from gateway.config import parse_site_config
from gateway.models import QualityStatus, Reading
from gateway.runtime.supervisor import Gateway
from simulators.modbus_fleet import Scenario
from simulators.opcua_plant import LineSpec, PlantServer, node_id
from tests.conftest import Mosquitto, free_port


def device(port: int, *points: dict[str, Any], interval: float = 0.5) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "connection": {
                "endpoint": f"opc.tcp://127.0.0.1:{port}/tanji/plant",
                "poll_interval_s": interval,
                "timeout_s": 2.0,
                "backoff_initial_s": 0.2,
                "backoff_max_s": 1.0,
            },
            "points": list(points),
        }
    )


ENERGY = {
    "name": "energy",
    "quantity": "active_energy_import",
    "kind": "counter",
    "unit": "kWh",
    "node": node_id("Line1.Meter.ActiveEnergyImport"),
}
UNITS = {
    "name": "units",
    "quantity": "production_count",
    "kind": "counter",
    "unit": "unit",
    "node": node_id("Line1.Production.UnitsProduced"),
    "data_type": "integer",
    "product": "CELL-A",
}
PRODUCT = {"quantity": "product_code", "node": node_id("Line1.Production.ProductCode")}
ORDER = {"quantity": "production_order", "node": node_id("Line1.Production.ProductionOrder")}
POWER_POLLED = {
    "name": "power",
    "quantity": "active_power",
    "kind": "gauge",
    "unit": "kW",
    "node": node_id("Line2.Meter.ActivePower"),
    "mode": "poll",
}


async def collect(collector: OpcUaCollector, seconds: float, on_batch: Any = None) -> list[Reading]:
    out: list[Reading] = []
    stream: AsyncIterator[list[Reading]] = collector.stream()

    async def pump() -> None:
        async for batch in stream:
            out.extend(batch)
            if on_batch is not None:
                await on_batch(out)

    task = asyncio.create_task(pump())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return out


def good(readings: list[Reading], name: str) -> list[Reading]:
    return [r for r in readings if r.point == name and r.quality.status is QualityStatus.GOOD]


async def test_subscribed_and_polled_points_read_with_timestamps_and_raw_bytes():
    port = free_port()
    async with PlantServer(port=port) as plant:
        collector = OpcUaCollector("P1", device(port, ENERGY, UNITS, POWER_POLLED), clock)
        readings = await collect(collector, 3.0)
        energy = good(readings, "energy")
        assert len(energy) >= 3, readings
        values = [r.value for r in energy]
        assert values == sorted(values)
        assert values[-1] > 0
        assert all(r.source_ts_ns for r in energy)  # the server's timestamps kept
        assert all(r.server_ts_ns for r in energy)
        assert all(r.server_ts_ns for r in good(readings, "power"))  # polled: read with both
        assert energy[-1].raw[:1] == bytes([11])  # the variant as encoded: Double (type 11)
        # the plant's Line1 counter at the sample's source time (Line2's differs by far)
        last = energy[-1]
        assert last.source_ts_ns is not None
        assert abs(float(values[-1]) - plant.energy_kwh("Line1", last.source_ts_ns / 1e9)) < 1e-6
        assert good(readings, "units")
        assert [r.value for r in good(readings, "power")][-1] == Decimal("18.5")
        assert len(good(readings, "power")) >= 3  # polled every cycle, unchanged or not
        assert collector.stats.disabled_points == []


def clock() -> int:
    import time

    return time.time_ns()


async def test_a_refused_node_is_reported_once_and_the_rest_go_on():
    port = free_port()
    missing = {**ENERGY, "name": "missing", "node": node_id("Line9.Meter.Nothing")}
    foreign = {**ENERGY, "name": "foreign", "node": "nsu=urn:nobody;s=x"}
    async with PlantServer(port=port):
        collector = OpcUaCollector("P1", device(port, ENERGY, missing, foreign), clock)
        readings = await collect(collector, 2.5)
    reasons = {(r.point, r.quality.reason) for r in readings if r.value is None}
    assert ("missing", "BadNodeIdUnknown") in reasons
    assert ("foreign", "BadNamespaceUnknown") in reasons
    assert len([r for r in readings if r.point == "missing"]) <= 2  # once, not every cycle
    assert sorted(collector.stats.disabled_points) == [
        "foreign: BadNamespaceUnknown",
        "missing: BadNodeIdUnknown",
    ]
    assert len(good(readings, "energy")) >= 3


async def test_server_restart_with_renumbered_namespaces_and_a_lost_session():
    port = free_port()
    collector = OpcUaCollector("P1", device(port, ENERGY, UNITS), clock)
    readings: list[Reading] = []
    stream = collector.stream()

    async def pump() -> None:
        async for batch in stream:
            readings.extend(batch)

    task = asyncio.create_task(pump())
    try:
        async with PlantServer(port=port, filler_namespaces=0) as first:
            await asyncio.sleep(2.0)
            index_before = first.namespace_index
        before = len(good(readings, "energy"))
        assert before >= 2
        await asyncio.sleep(2.0)  # the server is gone: the session is lost
        down = [r for r in readings if r.value is None]
        assert down, "no bad readings while the server was down"
        assert {r.quality.reason for r in down} <= {
            "connection-lost",
            "connection-refused",
            "timeout",
            "BadConnectionClosed",
            "BadShutdown",
            "BadServerNotConnected",
        }, {r.quality.reason for r in down}
        async with PlantServer(port=port, filler_namespaces=3) as second:
            assert second.namespace_index != index_before  # renumbered
            await asyncio.sleep(3.0)
            after = good(readings, "energy")[before:]
            assert len(after) >= 2, readings[-6:]
            # the values are the new server's Line1 counter, not some other node's
            src = (after[-1].source_ts_ns or 0) / 1e9
            assert abs(float(after[-1].value or 0) - second.energy_kwh("Line1", src)) < 1e-6
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_production_counters_reach_the_store(tmp_path: Path, mosquitto: Mosquitto):
    port = free_port()
    site = parse_site_config(
        {
            "enterprise": {"name": "t", "uscc": "91350100M000100Y43"},
            "gateway_id": "gw",
            "store": {"path": str(tmp_path / "g.db")},
            "mqtt": {"broker_url": f"mqtt://127.0.0.1:{mosquitto.port}"},
            "meters": [
                {
                    "id": "L1-OPC",
                    "serial": "SIM-OPC-1",
                    "model": "simulated plant meter",
                    "carrier": "electricity",
                    "accuracy_class": "1",
                    "line": "line-1",
                    "protocol": "opcua",
                    "connection": device(port, ENERGY).connection.model_dump(mode="json"),
                    "points": [ENERGY, UNITS, PRODUCT, ORDER],
                }
            ],
        }
    )
    fast = (LineSpec("Line1", 42.0, 120.0, "CELL-A"),)  # two units a second
    changeover = tmp_path / "changeover.toml"
    changeover.write_text(
        '[[events]]\nat_s = 0\nmeter = 0\nfault = "changeover"\nproduct = "CELL-B"\n'
    )
    async with PlantServer(port=port, lines=fast) as plant:
        gateway = Gateway(site)
        task = asyncio.create_task(gateway.run())
        await asyncio.sleep(3.0)
        plant.play(Scenario.load(changeover))
        await asyncio.sleep(3.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await gateway.close()
        made = plant.units("Line1")
    labels = gateway.status_snapshot()["meters"]["L1-OPC"]["labels"]  # `tanji status`
    assert labels == {"product_code": "CELL-B", "production_order": "Line1-PO00002"}
    from gateway.store.sqlite import Store

    store = Store(tmp_path / "g.db")
    units = [r for r in store.readings("L1-OPC", "units", 0, 2**63 - 1) if r.value is not None]
    energy = store.readings("L1-OPC", "energy", 0, 2**63 - 1)
    codes = store.readings("L1-OPC", "product_code", 0, 2**63 - 1)
    orders = store.readings("L1-OPC", "production_order", 0, 2**63 - 1)
    store.close()
    # what the line made when, as text readings next to the counters: CELL-A, then CELL-B
    texts = [r.text for r in codes]
    assert (texts[0], texts[-1]) == ("CELL-A", "CELL-B"), texts
    assert texts == sorted(texts)  # no flapping back
    assert {r.text for r in orders} == {"Line1-PO00001", "Line1-PO00002"}
    assert all(r.value is None and r.quality.status is QualityStatus.GOOD for r in codes)
    changed = next(r for r in codes if r.text == "CELL-B")
    assert None not in (changed.source_ts_ns, changed.server_ts_ns)
    assert len(units) >= 2
    assert units[-1].value is not None
    assert 0 < units[-1].value <= made
    assert energy


async def test_plant_faults_reach_the_readings_as_status_and_frozen_counters():
    """The Modbus simulator's fault kinds on a plant line: a meter that stops answering
    (Bad status), one that is busy (Uncertain, value kept), a frozen counter, a clear."""
    from simulators.modbus_fleet import FaultKind

    port = free_port()
    async with PlantServer(port=port) as plant:
        collector = OpcUaCollector("P1", device(port, ENERGY), clock)
        readings: list[Reading] = []

        async def pump() -> None:
            async for batch in collector.stream():
                readings.extend(batch)

        task = asyncio.create_task(pump())
        try:
            await asyncio.sleep(1.5)
            marks = {"start": len(readings)}
            plant.inject(0, FaultKind.SILENT)
            await asyncio.sleep(1.5)
            marks["silent"] = len(readings)
            plant.inject(0, FaultKind.BUSY)
            await asyncio.sleep(1.5)
            marks["busy"] = len(readings)
            plant.inject(0, FaultKind.CLEAR)
            plant.inject(0, FaultKind.FROZEN)
            await asyncio.sleep(2.0)
            marks["frozen"] = len(readings)
            plant.inject(0, FaultKind.CLEAR)
            await asyncio.sleep(1.5)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    silent = readings[marks["start"] : marks["silent"]]
    assert "BadCommunicationError" in {r.quality.reason for r in silent}
    assert silent[-1].value is None  # bad holds: the last good value is not repeated as good
    busy = readings[marks["silent"] : marks["busy"]]
    uncertain = [r for r in busy if r.quality.status is QualityStatus.UNCERTAIN]
    assert uncertain
    assert uncertain[-1].quality.reason == "UncertainLastUsableValue"
    assert uncertain[-1].value is not None  # an uncertain value is kept, marked
    frozen = [r.value for r in readings[marks["busy"] : marks["frozen"]] if r.value is not None]
    assert len(set(frozen[-3:])) == 1  # the counter stands still
    after = [r.value for r in good(readings[marks["frozen"] :], "energy")]
    assert after
    assert after[-1] > frozen[-1]  # and runs again, from where it stood


@pytest.mark.parametrize(
    ("simulator", "event", "message"),
    [
        ("opcua", 'fault = "slow"\ndelay_s = 2', "slow is not simulated over OPC UA"),
        ("opcua", 'fault = "glitch"', "glitch is not simulated over OPC UA"),
        ("modbus", 'fault = "changeover"\nproduct = "X"', "changeover is for the OPC UA plant"),
        (
            "opcua",
            'fault = "changeover"',
            "a changeover, and only a changeover, names its product",
        ),
    ],
)
def test_scenario_events_a_simulator_cannot_play_are_refused(
    tmp_path: Path, simulator: str, event: str, message: str
):
    from typer.testing import CliRunner

    from gateway.cli import app

    plan = tmp_path / "scenario.toml"
    plan.write_text(f"[[events]]\nat_s = 1\nmeter = 0\n{event}\n")
    result = CliRunner().invoke(app, ["sim", simulator, "--scenario", str(plan)])
    assert result.exit_code == 2
    assert message in result.output


async def test_requests_are_split_to_the_servers_operation_limits():
    """A server that takes at most 2 nodes per read and 2 monitored items per call (and
    refuses larger requests whole with BadTooManyOperations, as real ones do)."""
    from asyncua.client.client import Client
    from asyncua.ua.uaerrors import BadTooManyOperations

    port = free_port()
    power = {**POWER_POLLED, "node": node_id("Line1.Meter.ActivePower")}
    points = [ENERGY, UNITS, PRODUCT, ORDER, power]
    async with PlantServer(port=port, max_per_call=2) as plant:
        async with Client(plant.endpoint) as client:  # the limit is real
            energy = client.get_node(f"ns={plant.namespace_index};s=Line1.Meter.ActivePower")
            with pytest.raises(BadTooManyOperations):
                await client.read_attributes([energy] * 3)
        collector = OpcUaCollector("P1", device(port, *points), clock)
        readings = await collect(collector, 2.5)
    for name in ("energy", "units", "product_code", "production_order", "power"):
        assert good(readings, name), name
    assert collector.stats.disabled_points == []
    # the first read of 5 points took 3 requests, then one per polled cycle
    assert collector.stats.requests >= 4
