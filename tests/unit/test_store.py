"""The store refuses a database file of another schema version instead of misreading it."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.models import PointKind, Quality, Quantity, Reading
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
    with pytest.raises(StoreError, match=r"schema version 0, this tanji needs 5"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1


def test_unopenable_path_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(blocker / "sub" / "t.db")


def test_a_point_keeps_its_quantity_and_unit(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    energy = ("M1", "main", Quantity.ACTIVE_ENERGY_IMPORT, PointKind.COUNTER, "kWh")
    store.register_series([energy])
    store.close()
    store = Store(tmp_path / "t.db")
    store.register_series([energy])
    with pytest.raises(StoreError, match="point 'main' of meter 'M1' holds readings of"):
        store.register_series([("M1", "main", Quantity.GAS_VOLUME, PointKind.COUNTER, "m3")])


def test_readings_round_trip_exactly(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    r = Reading(
        meter_id="M1",
        point="main",
        quantity=Quantity.ACTIVE_ENERGY_IMPORT,
        kind=PointKind.COUNTER,
        unit="kWh",
        ts_ns=1_764_000_000_123_456_789,
        raw=b"\x00\x12\xd6\x87",
        value=Decimal("12345.67"),
        quality=Quality.good(),
    )
    bad = r.model_copy(
        update={"ts_ns": r.ts_ns + 1, "value": None, "quality": Quality.bad("timeout")}
    )
    store.append_readings([r, bad])  # the series is registered on first sight
    assert store.readings("M1", "main", 0, 2**63 - 1) == [r, bad]
    assert store.last_good_before("M1", "main", 2**63 - 1) == r
    assert store.readings("M1", "other", 0, 2**63 - 1) == []
