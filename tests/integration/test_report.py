"""`tanji report` over a real demo run: per-point totals equal the records' sum (and what the
platform received), CSV has every record, the HTML page has its chart."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from gateway.activity.aggregation import EXACT
from gateway.cli import app
from gateway.cli.demo_chain import run_demo
from tests.conftest import Mosquitto


async def test_report_of_a_demo_run(tmp_path: Path, mosquitto: Mosquitto):
    summary = await run_demo(
        tmp_path, meters=2, interval_s=4, duration_s=13, broker_port=mosquitto.port
    )
    assert summary.records_created >= 4
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    args = [
        "report",
        "-c",
        str(tmp_path / "site.toml"),
        "--from",
        str(today - timedelta(days=1)),
        "--to",
        str(today + timedelta(days=1)),
        "--csv",
        str(tmp_path / "r.csv"),
        "--html",
        str(tmp_path / "r.html"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "M1" in result.stdout
    assert "M2" in result.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert len(rows) == summary.records_created
    with localcontext(EXACT):  # the OPC UA meter's float-derived quantities: ~30 digits
        energy = sum(Decimal(r["quantity"]) for r in rows if r["point"] == "active_energy_import")
    assert str(energy) == summary.platform_kwh_total
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page
    assert "kWh per line and day" in page
    # the same energy rolled up per hour (exact: the records' boundaries telescope)
    result = CliRunner().invoke(app, [*args[:7], "--by", "hour", "--csv", str(tmp_path / "h.csv")])
    assert result.exit_code == 0, result.output
    hourly = list(csv.DictReader(io.StringIO((tmp_path / "h.csv").read_text())))
    assert len(hourly) < len(rows)
    assert {r["period_start"][13:] for r in hourly} == {":00:00+08:00"}
    with localcontext(EXACT):
        rolled = sum(Decimal(r["quantity"]) for r in hourly if r["point"] == "active_energy_import")
    assert rolled == energy
    result = CliRunner().invoke(app, [*args[:7], "--by", "7s", "--csv", str(tmp_path / "x.csv")])
    assert result.exit_code == 2
    assert "--by: '7s' is not an interval" in result.output
    result = CliRunner().invoke(app, [*args[:7], "--by", "6s", "--csv", str(tmp_path / "x.csv")])
    assert result.exit_code == 2
    assert "4s records do not add up to whole 6s periods" in result.output


def test_report_arguments_are_checked(tmp_path: Path):
    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    (tmp_path / "site.toml").write_text(example.read_text())
    site = str(tmp_path / "site.toml")
    result = CliRunner().invoke(app, ["report", "-c", site, "--from", "2026-13-01"])
    assert result.exit_code == 2
    assert "use YYYY-MM-DD" in result.output
    result = CliRunner().invoke(
        app, ["report", "-c", site, "--from", "2026-11-02", "--to", "2026-11-01"]
    )
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["report", "-c", site])
    assert result.exit_code == 1
    assert "has not run" in result.output
