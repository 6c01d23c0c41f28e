"""`tanji calibration list|due|import|revoke|history` as an operator uses them, on a real
store file: exit codes usable by scripts, every problem named."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

from gateway.cli import app

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"


def site(tmp_path: Path, due: date) -> str:
    text = EXAMPLE.read_text().replace("due_date = 2027-02-28", f"due_date = {due}")
    text = text.replace(
        "calibration_date = 2026-03-01", f"calibration_date = {due - timedelta(days=365)}"
    )
    (tmp_path / "site.toml").write_text(text)
    return str(tmp_path / "site.toml")


def site_today() -> date:
    """The site's day (the example site is in Asia/Shanghai), not the test machine's."""
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_list_and_due_tell_scripts_what_needs_doing(tmp_path: Path):
    today = site_today()
    config = site(tmp_path, today + timedelta(days=20))
    listed = cli("calibration", "list", "-c", config, "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "valid"
    assert row["certificate"]["certificate_no"] == "EXAMPLE-2026-0001"
    assert cli("calibration", "due", "-c", config, "--days", "10").exit_code == 0
    due = cli("calibration", "due", "-c", config, "--days", "30", "--json")
    assert due.exit_code == 1
    assert [r["days_left"] for r in json.loads(due.stdout)] == [20]
    assert "L1-MAIN" in cli("calibration", "due", "-c", config).stdout  # the table, for people
    at = str(today + timedelta(days=21))
    later = cli("calibration", "list", "-c", config, "--at", at, "--json")
    assert later.exit_code == 1
    assert json.loads(later.stdout)[0]["status"] == "expired"
    bad = cli("calibration", "list", "-c", config, "--at", "2026-02-30")
    assert bad.exit_code == 2
    assert "use YYYY-MM-DD" in bad.output


def test_import_revoke_and_history(tmp_path: Path):
    today = site_today()
    config = site(tmp_path, today - timedelta(days=1))  # the site's certificate has expired
    assert cli("calibration", "list", "-c", config).exit_code == 1
    new = tmp_path / "new.csv"
    new.write_text(
        "meter_id,certificate_no,kind,lab,accreditation_no,calibration_date,due_date\n"
        f"L1-MAIN,JL-2026-7,verification,Lab,CNAS L0000,{today},{today + timedelta(days=365)}\n"
    )
    imported = cli("calibration", "import", "-c", config, str(new))
    assert imported.exit_code == 0, imported.output
    assert "1 certificate(s) registered" in imported.output
    again = cli("calibration", "import", "-c", config, str(new))
    assert "0 certificate(s) registered, 1 already were" in again.output
    assert cli("calibration", "list", "-c", config).exit_code == 0
    revoked = cli(
        "calibration", "revoke", "-c", config, "L1-MAIN", "JL-2026-7", "--reason", "wrong meter"
    )
    assert revoked.exit_code == 0, revoked.output
    listed = cli("calibration", "list", "-c", config, "--json")
    assert json.loads(listed.stdout)[0]["status"] == "revoked"
    history = cli("calibration", "history", "-c", config, "L1-MAIN")
    assert history.exit_code == 0
    assert "wrong" in history.stdout
    assert "revoke" in history.stdout
    unknown = cli("calibration", "revoke", "-c", config, "L1-MAIN", "NOPE", "--reason", "x")
    assert unknown.exit_code == 2
    assert "no standing certificate 'NOPE'" in unknown.output


def test_bad_certificate_files_are_refused_with_reasons(tmp_path: Path):
    config = site(tmp_path, site_today() + timedelta(days=100))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[certificates]]\nmeter_id = "X"\ncertificate_no = "1"\n')
    result = cli("calibration", "import", "-c", config, str(bad))
    assert result.exit_code == 2
    assert "certificates[0].lab: is required" in result.output
    missing = cli("calibration", "import", "-c", config, str(tmp_path / "none.csv"))
    assert missing.exit_code == 2
    assert "cannot read" in missing.output


def test_a_dcc_is_imported_for_the_meter_with_its_serial_number(tmp_path: Path):
    config = site(tmp_path, site_today() + timedelta(days=100))
    text = (
        Path(config)
        .read_text()
        .replace('serial = "SIM-00001"', 'serial = "string-manufacturer-item"')
    )
    Path(config).write_text(text)
    dcc = Path(__file__).parents[1] / "data" / "dcc" / "dcclib_valid.xml"
    no_due = cli("calibration", "import", "-c", config, str(dcc))
    assert no_due.exit_code == 2
    assert "give it with --due" in no_due.output
    bad_due = cli("calibration", "import", "-c", config, str(dcc), "--due", "next year")
    assert bad_due.exit_code == 2
    assert "--due" in bad_due.output
    done = cli("calibration", "import", "-c", config, str(dcc), "--due", "1958-08-13")
    assert done.exit_code == 0, done.output
    assert "1 certificate(s) registered" in done.output
    history = cli("calibration", "history", "-c", config, "L1-MAIN")
    assert "1234" in history.stdout
    invalid = Path(__file__).parents[1] / "data" / "dcc" / "nmlph_02-2025-FORC-0042_INVALID.xml"
    refused = cli("calibration", "import", "-c", config, str(invalid), "--due", "2027-01-01")
    assert refused.exit_code == 2
    assert "not valid against the DCC 3.3.0 schema" in refused.output


def test_trace_reads_times_in_the_sites_zone_and_refuses_impossible_ones(tmp_path: Path):
    config = site(tmp_path, site_today() + timedelta(days=100))
    naive = cli("trace", "-c", config, "L1-MAIN", "--at", "2026-11-25T10:00:00", "--json")
    assert json.loads(naive.stdout)["at"] == "2026-11-25T10:00:00+08:00"
    assert naive.exit_code == 1  # no reading stored, no reference standard: broken
    for bad in ("0001-01-01T00:00:00+08:00", "yesterday"):
        result = cli("trace", "-c", config, "L1-MAIN", "--at", bad)
        assert result.exit_code == 2, result.output
        assert "--at:" in result.output
    unknown = cli("trace", "-c", config, "NOPE")
    assert unknown.exit_code == 2
    assert cli("calibration", "history", "-c", config, "NOPE").exit_code == 2


def test_a_meter_below_its_required_accuracy_class_is_a_finding(tmp_path: Path):
    config = site(tmp_path, site_today() + timedelta(days=100))
    text = Path(config).read_text()

    def require(required: str) -> None:
        line = f'accuracy_class = "1"\nrequired_accuracy_class = "{required}"'
        Path(config).write_text(text.replace('accuracy_class = "1"', line, 1))

    require("0.5S")
    result = cli("calibration", "list", "-c", config)
    assert result.exit_code == 1
    assert "L1-MAIN: accuracy class 1 does not meet the required 0.5S" in result.output
    require("2")
    assert cli("calibration", "list", "-c", config).exit_code == 0
    require("A")
    result = cli("calibration", "list", "-c", config)
    assert result.exit_code == 1
    assert "cannot compare class 1 with the required A" in result.output
