"""`tanji demo`'s options are checked before anything starts: a work dir with a previous
run's databases would be counted against this run's simulated meters and fail its own check."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app


def test_a_work_dir_in_use_is_refused_before_anything_runs(tmp_path: Path):
    (tmp_path / "gateway.db").write_bytes(b"a previous run")
    done = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path), "--duration", "5"])
    assert done.exit_code == 2
    assert f"--workdir {tmp_path}: not empty" in " ".join(done.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.db"]  # nothing started


def test_bad_duration_and_interval_are_named():
    runner = CliRunner()
    zero = runner.invoke(app, ["demo", "--duration", "0"])
    assert zero.exit_code == 2
    assert "--duration must be a positive number of seconds" in zero.output
    odd = runner.invoke(app, ["demo", "--interval", "7"])
    assert odd.exit_code == 2
    assert "--interval 7 must divide a day" in odd.output
