"""One gateway per store: a second `tanji run` on the same store stops at once with exit 2,
naming the store and the running gateway's PID; read-only commands still work while the
gateway runs; the lock goes with the process, also when it is killed with SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from gateway.cli.demo_site import demo_site, write_site
from gateway.runtime.status import status_path_for
from tests.conftest import free_port
from tests.support.procs import Proc, wait_until


def _tanji(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def _written_ns(status: Path) -> int:
    try:
        return int(json.loads(status.read_text())["written_ns"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_a_second_gateway_on_the_same_store_exits_2(tmp_path: Path):
    base = free_port()
    config = write_site(tmp_path, demo_site(tmp_path, 1, base, free_port(), 2))  # no broker
    site = str(tmp_path / "site.toml")
    status = status_path_for(config.store.path)
    meters = Proc(["sim", "modbus", "--meters", "1", "--base-port", str(base)], tmp_path / "m.log")
    first = Proc(["run", "-c", site], tmp_path / "first.log")
    second = Proc(["run", "-c", site], tmp_path / "second.log")
    meters.start()
    first.start()
    try:
        wait_until(lambda: _written_ns(status) > 0, 60, "the first gateway runs")
        assert first.proc is not None
        pid = first.proc.pid
        refused = _tanji("run", "-c", site)
        assert refused.returncode == 2, refused.stderr
        assert str(config.store.path) in refused.stderr, refused.stderr
        assert f"PID {pid}" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        # reading the store while the gateway runs is fine
        shown = _tanji("status", "-c", site, "--json")
        assert shown.returncode in (0, 1), shown.stderr  # 1: e.g. the link is down
        assert json.loads(shown.stdout)["gateway_id"] == "demo-gw"
        assert _tanji("report", "-c", site).returncode == 0
        assert first.proc.poll() is None, first.output()

        first.kill()  # SIGKILL: the lock goes with the process
        killed_at = time.time_ns()
        second.start()
        wait_until(lambda: _written_ns(status) > killed_at, 60, "the second gateway runs")
        assert second.interrupt() == 0, second.output()[-3000:]
    finally:
        for p in (first, second, meters):
            p.kill()
