"""The store's filesystem fills up, or fails, under a real `tanji run` (processes, a real
Mosquitto, the store on a small real filesystem: a tmpfs, or an ext4 image that is shut down).

Full: the gateway stays alive, refuses new readings with the cause in its status (and `tanji
status` exits 1 naming it), keeps the readings it collects meanwhile in memory, keeps
delivering what is in the outbox, and writes again by itself once space is back: no reading
it reported stored is lost, none collected during the outage either, the database is intact.
Failed (EIO on every write): the gateway exits 1 with one line naming the task and the cause,
so a service manager restarts it; never a live process doing nothing."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.demo_site import demo_site, write_site
from gateway.runtime.status import status_path_for
from tests.conftest import Mosquitto, free_port
from tests.support.procs import Proc, wait_until
from tests.support.smallfs import ext4_image, fill, shut_down, tmpfs

METERS = 2


def _site(tmp: Path, store_dir: Path, broker_port: int) -> tuple[Path, Path, Proc, Proc]:
    """site.toml with the store in `store_dir`; the meter simulator and gateway processes."""
    base = free_port()
    site = demo_site(tmp, METERS, base, broker_port, 2, "5", {"batch_size": 2})
    site["store"]["path"] = str(store_dir / "gateway.db")
    write_site(tmp, site)
    meters = Proc(
        ["sim", "modbus", "--meters", str(METERS), "--base-port", str(base)], tmp / "meters.log"
    )
    gateway = Proc(["run", "-c", str(tmp / "site.toml")], tmp / "gateway.log")
    return tmp / "site.toml", store_dir / "gateway.db", meters, gateway


def _status(db: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(status_path_for(db).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return loaded


def _query(db: Path, sql: str) -> list[Any]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_disk_full_refuses_keeps_syncing_and_resumes(tmp_path: Path, mosquitto: Mosquitto):
    with tmpfs(tmp_path / "fs", size_mb=24) as fs:
        site, db, meters, gateway = _site(tmp_path, fs, mosquitto.port)
        platform_db = tmp_path / "platform.db"
        platform = Proc(
            ["sim", "platform", "--broker", mosquitto.url, "--db", str(platform_db)],
            tmp_path / "platform.log",
        )
        meters.start()
        gateway.start()
        try:
            # records are made and wait in the outbox: the platform is not up yet
            wait_until(
                lambda: (_status(db).get("outbox") or {}).get("pending_batches", 0) >= 2,
                60,
                "records pending in the outbox",
            )
            filler = fill(fs)
            full_at = time.time_ns()
            wait_until(
                lambda: str(_status(db).get("store_refusing")).startswith("disk full"),
                30,
                "status names the full disk",
            )
            assert gateway.proc is not None
            assert gateway.proc.poll() is None, gateway.output()
            shown = subprocess.run(
                [sys.executable, "-m", "gateway", "status", "-c", str(site)],
                capture_output=True,
                text=True,
            )
            assert shown.returncode == 1
            assert "disk full" in shown.stdout, shown.stdout
            # the outbox keeps draining while the disk is full: every record made so far
            # reaches the platform
            made = {r for (r,) in _query(db, "SELECT record_id FROM activity_records")}
            platform.start()
            wait_until(
                lambda: (
                    made <= {r for (r,) in _query(platform_db, "SELECT record_id FROM records")}
                ),
                60,
                "the platform has every record made before the disk filled",
            )
            while time.time_ns() - full_at < 15 * 10**9:  # a while longer, full
                time.sleep(0.5)
                assert gateway.proc.poll() is None, gateway.output()
            status = _status(db)
            assert str(status["store_refusing"]).startswith("disk full")
            assert status["readings_pending"] > 0  # held in memory, not dropped
            reported = status["readings_stored"]
            log = gateway.output()
            # said once, not once a second
            assert log.count("store refuses new readings") == 1, log[-3000:]

            filler.unlink()  # space is back
            wait_until(
                lambda: (
                    _status(db).get("store_refusing") is None
                    and _status(db)["readings_stored"] > reported + 20
                ),
                60,
                "writing again",
            )
            status = _status(db)
            assert status["readings_refused"] == 0
            reported = status["readings_stored"]
            assert gateway.interrupt() == 0, gateway.output()[-3000:]
        finally:
            for p in (gateway, platform, meters):
                p.kill()
        log = gateway.output()
        assert "Traceback" not in log, log[-5000:]
        assert "writing new readings again" in log, log[-3000:]
        assert _query(db, "PRAGMA integrity_check") == [("ok",)]
        (stored,) = _query(db, "SELECT count(*) FROM readings")[0]
        assert stored >= reported  # nothing reported stored is lost
        # nor what was collected while the disk was full: no hole in a meter's readings
        times = [
            t
            for (t,) in _query(
                db,
                "SELECT r.ts_ns FROM readings r JOIN series s ON s.id = r.series WHERE"
                " s.meter_id = 'M1' AND s.point = 'active_energy_import' ORDER BY r.ts_ns",
            )
        ]
        assert times[0] < full_at < times[-1]
        widest = max(b - a for a, b in itertools.pairwise(times))
        assert widest < 5 * 10**9, f"a hole of {widest / 1e9:.1f} s in M1's readings"


@pytest.mark.timeout(120)
def test_a_failing_disk_ends_the_gateway_with_exit_1(tmp_path: Path):
    with ext4_image(tmp_path / "fs", size_mb=32) as fs:
        _site_path, db, meters, gateway = _site(tmp_path, fs, free_port())  # no broker: fine
        meters.start()
        gateway.start()
        try:
            wait_until(lambda: _status(db).get("readings_stored", 0) > 10, 60, "readings stored")
            shut_down(fs)  # every write now fails with EIO
            assert gateway.proc is not None
            code = gateway.proc.wait(timeout=30)
        finally:
            gateway.kill()
            meters.kill()
    log = gateway.output()
    assert code == 1, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    assert "ExceptionGroup" not in log, log[-5000:]
    (last,) = [ln for ln in log.splitlines() if ln.startswith("tanji:")][-1:]
    # the store writer or the aggregator (which commits pending readings first) meets it
    assert "the store cannot be written: disk I/O error" in last, last
