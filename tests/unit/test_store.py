"""The store brings a file of the previous schema version forward in place and refuses one of
any other version instead of misreading it."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.evidence import leaf_hash
from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.store.schema import SCHEMA_VERSION
from gateway.store.sqlite import Store, StoreError

DATA = Path(__file__).parent.parent / "data"


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
    with pytest.raises(StoreError, match=rf"schema version 0, this tanji needs {SCHEMA_VERSION}"):
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
    assert store.good_before("M1", "main", 2**63 - 1, 10) == [r]  # good ones only
    assert store.readings("M1", "other", 0, 2**63 - 1) == []


def test_a_version_5_file_is_brought_forward_with_its_readings(tmp_path: Path):
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "store-v5.sql").read_text())
    conn.execute("PRAGMA user_version=5")
    conn.close()
    store = Store(path)
    old = store.readings("M1", "active_energy_import", 0, 2**63 - 1)
    assert [r.value for r in old] == [Decimal("1234.5"), None]
    assert [r.quality.reason for r in old] == [None, "timeout"]
    (units,) = store.readings("P1", "units", 0, 2**63 - 1)
    assert (units.source_ts_ns, units.server_ts_ns, units.text) == (1764028804990000000, None, None)
    assert store.cursor("mirror") == 2
    # the hashes sealed over these readings before still come out the same
    assert leaf_hash(old[0]).hex() == (
        "a158f2258a1d662f50ffe46fe7af8797e8aef7341c67e8ea66000ea47a518bf0"
    )
    store.append_readings([LABEL])
    assert store.readings("P1", "product_code", 0, 2**63 - 1) == [LABEL]
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_file_is_refused(tmp_path: Path):
    path = tmp_path / "new.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="from a newer tanji"):
        Store(path)


LABEL = Reading(
    meter_id="P1",
    point="product_code",
    quantity=Quantity.PRODUCT_CODE,
    kind=PointKind.LABEL,
    unit="",
    ts_ns=1_764_000_000_000_000_000,
    source_ts_ns=1_763_999_999_000_000_000,
    server_ts_ns=1_763_999_999_500_000_000,
    raw=b"\x0c\x07\x00\x00\x00BAT-48V",  # a String variant: type 12, length 7, bytes
    value=None,
    text="BAT-48V",
    quality=Quality.good(),
)


def test_labels_and_server_timestamps_round_trip(tmp_path: Path):
    store = Store(tmp_path / "t.db")
    bad = LABEL.model_copy(
        update={"ts_ns": LABEL.ts_ns + 1, "text": None, "quality": Quality.bad("BadNodeIdUnknown")}
    )
    store.append_readings([LABEL, bad])
    assert store.readings("P1", "product_code", 0, 2**63 - 1) == [LABEL, bad]
