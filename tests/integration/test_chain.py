"""The whole chain over real sockets: simulated meters -> gateway -> Mosquitto -> platform."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from gateway.demo import run_demo
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
