"""The store refuses a database file of another schema version instead of misreading it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.store import SCHEMA_VERSION, Store, StoreError


def test_new_file_gets_current_schema_version(tmp_path: Path):
    Store(tmp_path / "t.db").close()
    conn = sqlite3.connect(tmp_path / "t.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    Store(tmp_path / "t.db").close()  # and opens again


def test_old_schema_is_refused_and_left_untouched(tmp_path: Path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, quantity TEXT)")
    conn.execute("INSERT INTO readings (quantity) VALUES ('active_energy_import')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 0, this tanji needs 2"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1


def test_unopenable_path_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(blocker / "sub" / "t.db")
