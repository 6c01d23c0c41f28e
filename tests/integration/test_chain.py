"""The whole chain over real sockets: simulated meters -> gateway -> Mosquitto -> platform."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from gateway.demo import DemoParts, run_demo
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


async def test_broker_restart_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, mosquitto: Mosquitto
):
    ticks = {"n": 0, "acked_before_stop": None}

    def outage(parts: DemoParts) -> None:
        ticks["n"] += 1
        if ticks["n"] == 8:  # ~4 s in: broker dies (kill -9) while the gateway runs
            ticks["acked_before_stop"] = parts.platform.counters.accepted
            mosquitto.kill()
        elif ticks["n"] == 20:  # ~6 s later it comes back on the same port
            mosquitto.start()

    summary = await run_demo(
        tmp_path,
        meters=2,
        interval_s=2,
        duration_s=16,
        on_tick=outage,
        broker_port=mosquitto.port,
    )
    assert ticks["acked_before_stop"] is not None
    # records made during the outage reached the platform after it: nothing lost
    assert summary.batches_pending == 0
    assert summary.platform_records == summary.records_created
    assert summary.totals_match, summary
    # every record exactly once at the platform (its primary key is the record id)
    assert summary.records_created > 4


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
    ):
        assert key in summary
    assert summary["batches_acked"] >= 1
    assert summary["totals_match"] is True
    assert (tmp_path / "site.toml").exists()
