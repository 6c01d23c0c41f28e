"""kill -9 of a process writing to the store, at random moments mid-batch: every batch it
reported committed is there, no half batch is, and the database is consistent."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.store.sqlite import Store
from tests.support.store_writer import BATCH


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_mid_batch_loses_nothing_committed(tmp_path: Path, seed: int):
    db = tmp_path / "store.db"
    rng = random.Random(seed)
    reported = 0
    for _ in range(3):  # kill, reopen, write on, kill again
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.store_writer", str(db)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        target = reported + rng.randint(3, 12)
        while reported < target:
            line = proc.stdout.readline()
            assert line.startswith("committed"), line
            reported = int(line.split()[1])
        time.sleep(rng.uniform(0, 0.05))  # somewhere inside a later batch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # anything printed before the kill was committed too
        reported += sum(1 for ln in proc.stdout if ln.startswith("committed"))
        store = Store(db)  # recovers the WAL
        count = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.close()
        assert count % BATCH == 0, "a half-written batch survived"
        assert count >= reported * BATCH, (count, reported)
        reported = count // BATCH  # a batch may commit just before the kill lands
    conn = sqlite3.connect(db)
    # the batches are whole and in order: one value per batch, BATCH readings each
    per_batch = conn.execute("SELECT value, count(*) FROM readings GROUP BY value").fetchall()
    assert all(n == BATCH for _, n in per_batch)
