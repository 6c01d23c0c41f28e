"""A short fault campaign with bench/faults.py's own code: real Mosquitto, `tanji sim modbus`
with counter faults, `tanji sim platform` and `tanji run`; ten gateway SIGKILLs at seeded
random moments, one platform SIGKILL, one broker restart, then a clean drain. Every record
the gateway made is at the platform exactly once, and each meter's energy there is what its
own counter advanced over the same spans: each run of measured periods within one register
step (half a step more for each end the gateway interpolated); periods the gateway could not
measure (a rolled-over jump, a replaced meter) book no more than the meter counted. The
full campaign (>= 200 kills) is `python -m bench.faults`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import Options, run_campaign
from tests.conftest import _mosquitto_binary, require


@pytest.mark.timeout(240)
def test_short_campaign_loses_nothing_counts_nothing_twice_invents_no_energy(tmp_path: Path):
    mosquitto = require("mosquitto", _mosquitto_binary())
    options = Options(
        seed=3,
        kills=10,
        duration_s=30,
        platform_every=6,
        broker_every=9,
        fault_every_s=6,
        drain_timeout_s=90,
    )
    result = run_campaign(tmp_path, options, mosquitto)
    summary = {k: result[k] for k in ("kills", "drain", "records", "energy", "scenario")}

    assert result["kills"] == {
        "gateway_sigkill": 10, "platform_sigkill": 1, "broker_sigterm": 1,
    }, summary  # fmt: skip
    assert {"frozen", "rollover", "replaced", "glitch"} <= set(result["scenario"]["faults_planned"])
    assert result["gateway_exited_before_its_kill"] == {}, summary  # no lock left, no crash
    assert result["drain"]["complete"], summary
    assert result["drain"]["exit_codes"]["gateway"] == 0, summary
    records = result["records"]
    assert records["gateway"] > 0
    assert records["platform"] == records["gateway"], summary
    assert records["lost"] == 0, summary
    assert records["duplicated"] == 0, summary
    assert records["overlapping_periods"] == 0, summary
    assert records["unknown_at_platform"] == 0, summary
    energy = result["energy"]
    assert set(energy) == {"M1", "M2", "M3"}
    for meter, e in energy.items():
        assert e["measured_records"] > 0, (meter, e)
        assert e["every_run_within_its_register_step"], (meter, e)
        assert e["not_measured_booking_more_than_counted"] == 0, (meter, e)
    assert result["ok"]
