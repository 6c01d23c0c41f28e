"""The whole chain over real sockets: simulated meters -> gateway -> Mosquitto -> platform."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from gateway.cli.demo_chain import run_demo
from simulators.platform import PlatformStore
from tests.conftest import Mosquitto


async def test_platform_totals_equal_simulator_counters(tmp_path: Path, mosquitto: Mosquitto):
    summary = await run_demo(
        tmp_path, meters=2, interval_s=2, duration_s=9, broker_port=mosquitto.port
    )
    assert summary.batches_acked >= 1
    assert summary.batches_pending == 0
    assert summary.platform_records == summary.records_created
    assert Decimal(summary.platform_kwh_total) > 0
    assert summary.totals_match, summary
    assert summary.bad_readings == 0
    # stored by the simulator under its name, as `tanji sim platform` stores them
    assert set(PlatformStore(tmp_path / "platform.db").by_instance()) == {"tanji-platform-sim"}


def test_tanji_demo_command_prints_json_summary(tmp_path: Path):
    """`tanji demo --duration S --json` as a user runs it, with the embedded broker."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--duration",
            "9",
            "--interval",
            "2",
            "--json",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in (
        "meters",
        "readings_stored",
        "batches_acked",
        "platform_kwh_total",
        "simulator_kwh_total",
        "platform_kwh_expanded_uncertainty",
        "calibration",
        "balance",
    ):
        assert key in summary
    assert summary["meters"] == 4  # the default: three meters behind a main meter
    assert sum(summary["balance"].values()) >= 1
    assert summary["balance"]["imbalance"] == 0
    assert summary["batches_acked"] >= 1
    assert summary["totals_match"] is True
    # line 3's product code and production order, read over OPC UA as text
    assert summary["labels"]["P1"] == {
        "product_code": "pack-z",
        "production_order": "Line1-PO00001",
    }
    assert (tmp_path / "site.toml").exists()


async def test_energy_per_product_through_the_chain(tmp_path: Path, mosquitto: Mosquitto):
    """Production counters read over Modbus reach the platform as records of their product;
    a line's energy (its meters' fractions) is split between its products by output."""
    from gateway.activity.allocation import allocate
    from gateway.models import ActivityRecord
    from simulators.platform import PlatformStore

    summary = await run_demo(
        tmp_path, meters=3, interval_s=2, duration_s=9, broker_port=mosquitto.port
    )
    assert summary.totals_match, summary
    assert summary.calibration == {"M1": "valid", "M2": "valid", "M3": "expired", "P1": "valid"}
    assert Decimal(summary.platform_kwh_expanded_uncertainty) > 0
    assert set(summary.products) == {
        "line-1/cell-a",
        "line-1/cell-b",
        "line-2/module-x",
        "line-3/pack-z",  # the plant's line, over OPC UA
    }
    assert Decimal(summary.products["line-3/pack-z"]["units"]) > 0
    a, b = (Decimal(summary.products[f"line-1/cell-{x}"]["units"]) for x in "ab")
    assert a > 0
    assert abs(a - 2 * b) <= 2  # the simulator makes A twice as fast as B, counters floor
    records = [
        ActivityRecord.model_validate(r) for r in PlatformStore(tmp_path / "platform.db").records()
    ]
    counted = {r.product for r in records if r.product}
    assert counted == {"cell-a", "cell-b", "module-x", "pack-z"}
    energy = {
        m: sum(r.quantity for r in records if r.meter_id == m and r.point == "active_energy_import")
        for m in ("M1", "M2", "M3")
    }
    kwh = ("electricity", "kWh")
    result = allocate(records)
    lines = {x.line: x for x in result.lines}
    assert lines["line-1"].energy[kwh] == energy["M1"] + energy["M3"] / 2
    assert lines["line-2"].energy[kwh] == energy["M2"] + energy["M3"] / 2
    on_line_1 = sum(p.energy.get(kwh, 0) for p in result.products if p.line == "line-1")
    assert on_line_1 + lines["line-1"].idle.get(kwh, 0) == lines["line-1"].energy[kwh]

    # the traceability chain: complete for a calibrated meter, broken where it expired
    from typer.testing import CliRunner

    from gateway.cli import app

    site = str(tmp_path / "site.toml")
    good = CliRunner().invoke(app, ["trace", "-c", site, "M1", "--json"])
    assert good.exit_code == 0, good.output
    chain = json.loads(good.stdout)
    assert chain["complete"] is True
    assert [x["kind"] for x in chain["links"]] == [
        "reading",
        "meter",
        "certificate",
        "laboratory",
        "reference standard",
        "certificate",
        "laboratory",
        "national standard",
    ]
    m2 = [r for r in records if r.meter_id == "M2" and r.point == "active_energy_import"]
    assert m2[0].uncertainty is not None
    assert m2[0].uncertainty.basis.startswith("certificate DEMO-DCC-0002")  # M2's DCC
    assert CliRunner().invoke(app, ["trace", "-c", site, "M2"]).exit_code == 0
    broken = CliRunner().invoke(app, ["trace", "-c", site, "M3", "--json"])
    assert broken.exit_code == 1
    links = json.loads(broken.stdout)["links"]
    assert (links[2]["kind"], links[2]["state"]) == ("certificate", "expired")


async def test_a_backfilled_reading_reaches_the_platform_as_a_revision(
    tmp_path: Path, mosquitto: Mosquitto
):
    """A reading delivered late (inside a period already sealed and acknowledged) makes a new
    revision of that period's record, which the platform takes as superseding the first;
    the totals still equal the simulator's counter."""
    from gateway.models import PointKind, Quality, Quantity, Reading
    from gateway.periods import datetime_to_ns

    injected: list[Reading] = []

    def backfill(parts) -> None:
        sealed = [
            r
            for r in parts.platform.store.records()
            if r["meter_id"] == "M1" and r["point"] == "active_energy_import"
        ]
        if injected or not sealed:
            return
        from datetime import datetime

        t_ns = datetime_to_ns(datetime.fromisoformat(sealed[0]["period_start"])) + 500_000_000
        (meter,) = [m for m in parts.fleet.meters if m.index == 0]
        value = meter.counter_kwh_at(t_ns / 1e9)
        raw = int(value * 100).to_bytes(4, "big")
        injected.append(
            Reading.trusted(
                "M1",
                "active_energy_import",
                Quantity.ACTIVE_ENERGY_IMPORT,
                PointKind.COUNTER,
                "kWh",
                t_ns,
                raw,
                value,
                Quality.good(),
            )
        )
        parts.gateway.submit(injected)

    summary = await run_demo(
        tmp_path,
        meters=1,
        interval_s=2,
        duration_s=20,  # sealed once 10 readings follow a period (gateway/activity/counters.py)
        on_tick=backfill,
        broker_port=mosquitto.port,
    )
    assert injected
    assert summary.totals_match, summary
    assert summary.batches_pending == 0
    from simulators.platform import PlatformStore

    platform = PlatformStore(tmp_path / "platform.db")
    every = platform.records(revisions=True)
    revised = [r for r in every if r["revision"] == 1]
    assert len(revised) == 1  # the period holding the late reading (its neighbours unchanged)
    first = next(r for r in every if r["record_id"] == revised[0]["supersedes"])
    assert first["revision"] == 0
    assert revised[0]["reading_count"] == first["reading_count"] + 1
    latest = platform.records()
    assert len(latest) == len(every) - 1
    assert revised[0] in latest
