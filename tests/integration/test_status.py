"""`tanji status` shows the running gateway's per-meter polling statistics and flags trouble."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli.demo_chain import run_demo
from gateway.cli.demo_summary import DemoParts
from gateway.runtime import status as runtime_status
from simulators.modbus_fleet import FaultKind
from tests.conftest import Mosquitto


async def test_status_reports_poll_statistics_and_the_failing_meter(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runtime_status, "STATUS_INTERVAL_S", 0.5)
    seen: dict[str, object] = {}
    site = tmp_path / "site.toml"

    def tick(parts: DemoParts) -> None:
        seen["ticks"] = n = int(seen.get("ticks", 0)) + 1  # type: ignore[call-overload]
        if n == 4:
            parts.fleet.inject(1, FaultKind.SILENT)
        if n == 12:
            seen["json"] = CliRunner().invoke(app, ["status", "-c", str(site), "--json"])
            seen["table"] = CliRunner().invoke(app, ["status", "-c", str(site)])
            seen["metrics"] = CliRunner().invoke(app, ["status", "-c", str(site), "--metrics"])

    await run_demo(
        tmp_path, meters=2, interval_s=60, duration_s=7, on_tick=tick, broker_port=mosquitto.port
    )
    result = seen["json"]
    assert result.exit_code == 1, result.output  # a meter needs attention
    snapshot = json.loads(result.stdout)
    healthy, silent = snapshot["meters"]["M1"], snapshot["meters"]["M2"]
    outbox = snapshot["outbox"]  # the backlog and its age, from the running gateway
    assert outbox is not None
    assert outbox["dead_letters"] == 0
    assert isinstance(outbox["pending_batches"], int)
    assert healthy["last_reason"] is None
    assert healthy["poll"]["cycles"] >= 4
    assert healthy["poll"]["latency_ms"]["p95"] is not None
    assert silent["last_reason"] in ("timeout", "not-polled-after-timeout")
    assert silent["poll"]["timeouts"] >= 1
    table = seen["table"].stdout
    assert "M2" in table, table
    assert "timeout" in table, table
    assert "platform link up" in table, table
    # the same figures for a scraper, in Prometheus' text format (parsed by its own parser)
    from prometheus_client.parser import text_string_to_metric_families

    metrics = seen["metrics"]
    assert metrics.exit_code == 0, metrics.output
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.stdout)
        for s in family.samples
    }
    assert samples["tanji_platform_link_up", ()] == 1
    assert samples["tanji_outbox_dead_letters", ()] == 0
    assert samples["tanji_outbox_pending_batches", ()] == outbox["pending_batches"]
    assert samples["tanji_meter_readings_total", (("meter", "M1"),)] >= 4
    assert samples["tanji_meter_bad_readings_total", (("meter", "M2"),)] >= 1


def test_status_without_a_running_gateway_is_a_finding(tmp_path: Path):
    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    site = tmp_path / "site.toml"
    site.write_text(example.read_text())
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    # exit 1 and the message as ever, one line through the face's error handler ("tanji: ")
    assert result.exit_code == 1
    path = tmp_path / "tanji.db.status.json"
    assert result.output == (
        f"tanji: no status at {path}: the gateway has not run with this configuration\n"
    )
    path.write_text("{not json")
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 1
    assert result.output.startswith(f"tanji: {path}: not a tanji status file (")
    assert "Traceback" not in result.output


def test_status_flags_failed_aggregation_and_late_readings_set_aside(tmp_path: Path):
    import time

    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    site = tmp_path / "site.toml"
    site.write_text(example.read_text())
    from collectors import CollectorStats

    poll = CollectorStats().snapshot()
    meter = {"readings": 10, "bad": 0, "last_reason": None, "last_ts_ns": None, "restarts": 0}
    snapshot = {
        "schema": "tanji.gateway-status/1",
        "gateway_id": "gw",
        "written_ns": str(time.time_ns()),
        "records_created": 4,
        "records_revised": 1,
        "readings_set_aside": 2,
        "aggregation_failures": 0,
        "meters": {"L1-MAIN": {**meter, "poll": poll}},
    }
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 1, result.output
    assert "2 late readings SET ASIDE" in result.output
    assert "(1 revisions)" in result.output
    snapshot["readings_set_aside"] = 0
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 0, result.output
    snapshot["outbox"] = {
        "pending_batches": 3,
        "oldest_pending_age_s": 120.0,
        "dead_letters": 1,
        "held_batches": 0,
        "records_acked": 10,
    }
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 1
    assert "backlog 3 batches (oldest 120 s)" in result.output
    assert "1 DEAD LETTERS" in result.output
    # the broker is up (link connected) but nobody acknowledges: after 3 x ack_timeout_s
    # (30 s by default) that needs attention too
    snapshot["outbox"] = {**snapshot["outbox"], "dead_letters": 0, "oldest_pending_age_s": 60.0}
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    assert CliRunner().invoke(app, ["status", "-c", str(site)]).exit_code == 0
    snapshot["outbox"]["oldest_pending_age_s"] = 120.0
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    result = CliRunner().invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 1, result.output
    assert "NOT ACKNOWLEDGED" in result.output


def test_status_shows_what_the_lines_make(tmp_path: Path):
    import time

    from collectors import CollectorStats

    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    site = tmp_path / "site.toml"
    site.write_text(example.read_text())
    meter = {"readings": 10, "bad": 0, "last_reason": None, "last_ts_ns": None, "restarts": 0}
    labels = {"product_code": "pack-z", "production_order": "Line1-PO00007"}
    snapshot = {
        "schema": "tanji.gateway-status/1",
        "gateway_id": "gw",
        "written_ns": str(time.time_ns()),
        "meters": {
            "L1-MAIN": {**meter, "poll": CollectorStats().snapshot()},
            "P1": {**meter, "labels": labels, "poll": CollectorStats().snapshot()},
        },
    }
    (tmp_path / "tanji.db.status.json").write_text(json.dumps(snapshot))
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["status", "-c", str(site)])
    assert result.exit_code == 0, result.output
    assert "making" in result.output
    assert "pack-z / Line1-PO00007" in result.output


async def test_status_shows_disabled_points_and_when_they_are_asked_again(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
):
    """A meter that refuses its registers (exception 02) has them disabled; the running
    gateway's status names them and says when each is asked again (a minute by default)."""
    import re
    import time

    monkeypatch.setattr(runtime_status, "STATUS_INTERVAL_S", 0.5)
    seen: dict[str, object] = {}
    site = tmp_path / "site.toml"

    def tick(parts: DemoParts) -> None:
        seen["ticks"] = n = int(seen.get("ticks", 0)) + 1  # type: ignore[call-overload]
        if n == 3:
            parts.fleet.inject(1, FaultKind.EXCEPTION, code=2)
        if n == 8:
            seen["at"] = time.time()
            seen["json"] = CliRunner().invoke(app, ["status", "-c", str(site), "--json"])
            seen["table"] = CliRunner(env={"COLUMNS": "400"}).invoke(
                app, ["status", "-c", str(site)]
            )

    await run_demo(
        tmp_path, meters=2, interval_s=60, duration_s=6, on_tick=tick, broker_port=mosquitto.port
    )
    result = seen["json"]
    assert result.exit_code == 1, result.output  # a meter needs attention
    poll = json.loads(result.stdout)["meters"]["M2"]["poll"]
    assert poll["disabled_points"], poll
    assert set(poll["disabled_retry_at"]) == set(poll["disabled_points"])
    for at in poll["disabled_retry_at"].values():
        assert seen["at"] < at < seen["at"] + 61  # type: ignore[operator]
    table = seen["table"].stdout
    for point in poll["disabled_points"]:
        assert re.search(rf"disabled: {re.escape(point)} \(asked again in \d+ s\)", table), table
