"""Fault: the broker process is killed (SIGKILL) mid-run and restarted on the same port."""

from __future__ import annotations

from pathlib import Path

from gateway.cli.demo_chain import run_demo
from gateway.cli.demo_summary import DemoParts
from tests.conftest import Mosquitto


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
