"""Retention and the disk cap evict in the documented order: readings whose activity records
the platform acknowledged go first, oldest first; nothing unsealed or unacknowledged ever
goes; at the cap with nothing evictable, the store says so (and the gateway refuses new
readings). Real SQLite files on disk."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import cloud_sync
from gateway.activity.counters import CONTEXT
from gateway.config import load_site_config
from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.runtime import writer as runtime_writer
from gateway.runtime.supervisor import Gateway
from gateway.runtime.writer import KEEP
from gateway.store.sqlite import Store

NS = 1_000_000_000
MIN = 60 * NS
T0 = 1_764_000_000 * NS - (1_764_000_000 * NS) % (15 * MIN)  # a 15-minute boundary


def reading(meter: str, point: str, t_ns: int, raw: bytes = b"\x00\x01") -> Reading:
    return Reading.trusted(
        meter,
        point,
        Quantity.ACTIVE_ENERGY_IMPORT if point == "energy" else Quantity.ACTIVE_POWER,
        PointKind.COUNTER if point == "energy" else PointKind.GAUGE,
        "kWh" if point == "energy" else "kW",
        t_ns,
        raw,
        Decimal(t_ns // MIN),
        Quality.good(),
    )


def open_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "g.db")
    cloud_sync.create_schema(store.conn)
    return store


def seal(store: Store, meter: str, start: int, end: int, batch: str, state: str) -> None:
    """What aggregation + outbox leave behind for one period (rows only)."""
    store.conn.execute(
        "INSERT INTO activity_records (record_id, meter_id, point, period_start_ns,"
        " period_end_ns, revision, record_json, created_ns, batch_id) VALUES (?,?,?,?,?,?,?,?,?)",
        (f"{meter}-{start}", meter, "energy", start, end, 0, "{}", end, batch),
    )
    store.conn.execute(
        "INSERT OR IGNORE INTO outbox (batch_id, payload, record_count, created_ns, state)"
        " VALUES (?,?,?,?,?)",
        (batch, b"{}", 1, end, state),
    )


def timestamps(store: Store, meter: str, point: str) -> list[int]:
    return [r.ts_ns for r in store.readings(meter, point, 0, 2**63 - 1)]


def test_only_acknowledged_periods_are_evicted_and_the_boundary_reading_stays(tmp_path: Path):
    store = open_store(tmp_path)
    minutes = [T0 + m * MIN for m in range(45)]  # three 15-minute periods
    store.append_readings(
        [
            reading(m, p, t)
            for t in minutes
            for m, p in (("M1", "energy"), ("M1", "power"), ("M2", "power"))
        ]
    )
    seal(store, "M1", T0, T0 + 15 * MIN, "b1", "acked")
    seal(store, "M1", T0 + 15 * MIN, T0 + 30 * MIN, "b2", "pending")
    deleted = store.evict(T0 + 45 * MIN, store.evictable_before(sealed_ns=T0 + 30 * MIN, keep=KEEP))
    # M1: period 1 acked, period 2 pending: readings before the last one of period 1 go, that
    # one stays (it opens period 2); of a counter the last CONTEXT (its glitch rules' window)
    assert timestamps(store, "M1", "energy") == minutes[15 - CONTEXT :]
    assert timestamps(store, "M1", "power") == minutes[14:]
    # M2 (gauges only, no records) is done with at the end of the last sealed period
    assert timestamps(store, "M2", "power") == minutes[29:]
    assert deleted == (15 - CONTEXT) + 14 + 29


def test_a_rejected_batch_settles_its_periods_and_a_new_counter_keeps_everything(
    tmp_path: Path,
):
    store = open_store(tmp_path)
    minutes = [T0 + m * MIN for m in range(30)]
    store.append_readings([reading(m, "energy", t) for t in minutes for m in ("M1", "M2")])
    seal(store, "M1", T0, T0 + 15 * MIN, "b1", "rejected")  # the platform refused it
    horizons = store.evictable_before(sealed_ns=T0 + 30 * MIN, keep=KEEP)
    store.evict(T0 + 30 * MIN, horizons)
    assert timestamps(store, "M1", "energy") == minutes[15 - CONTEXT :]  # rejected: settled
    assert timestamps(store, "M2", "energy") == minutes  # a counter with no record yet


def test_retention_keeps_young_readings_even_when_acknowledged(tmp_path: Path):
    store = open_store(tmp_path)
    minutes = [T0 + m * MIN for m in range(30)]
    store.append_readings([reading("M1", "energy", t) for t in minutes])
    seal(store, "M1", T0, T0 + 15 * MIN, "b1", "acked")
    seal(store, "M1", T0 + 15 * MIN, T0 + 30 * MIN, "b2", "acked")
    result = store.enforce_limits(
        now_ns=T0 + 30 * MIN,
        sealed_ns=T0 + 30 * MIN,
        retention_ns=20 * MIN,
        cap_bytes=None,
        keep=KEEP,
    )
    assert result.deleted == 10  # older than 20 minutes
    assert timestamps(store, "M1", "energy") == minutes[10:]


def test_the_disk_cap_holds_while_writing_past_it(tmp_path: Path):
    store = open_store(tmp_path)
    cap = 2_000_000
    raw = bytes(200)  # big readings fill the cap quickly
    t = T0
    for period in range(40):  # ~4 MB written in all, twice the cap
        store.append_readings(
            [reading("M1", "energy", t + i * NS, raw) for i in range(0, 15 * 60, 2)]
        )
        end = t + 15 * MIN
        seal(store, "M1", t, end, f"b{period}", "acked" if period < 38 else "pending")
        t = end
        result = store.enforce_limits(t, t, retention_ns=10**6 * MIN, cap_bytes=cap, keep=KEEP)
        assert result.used_bytes <= cap
        assert not result.over_cap
    # eviction went oldest first and never touched the two unacknowledged periods
    left = timestamps(store, "M1", "energy")
    assert left == sorted(left)
    assert left[0] < T0 + 38 * 15 * MIN
    assert {x for x in left if x >= T0 + 38 * 15 * MIN} == {
        T0 + 38 * 15 * MIN + i * NS for i in range(0, 2 * 15 * 60, 2)
    }
    assert (tmp_path / "g.db").stat().st_size < 2 * cap  # free pages are reused


def test_at_the_cap_with_nothing_acknowledged_nothing_goes(tmp_path: Path):
    store = open_store(tmp_path)
    store.append_readings([reading("M1", "energy", T0 + i * NS, bytes(200)) for i in range(5000)])
    seal(store, "M1", T0, T0 + 15 * MIN, "b1", "pending")
    result = store.enforce_limits(T0 + 15 * MIN, T0 + 15 * MIN, 1, cap_bytes=100_000, keep=KEEP)
    assert result.over_cap
    assert result.deleted == 0
    assert len(timestamps(store, "M1", "energy")) == 5000


def _capped_gateway(tmp_path: Path, max_disk_mb: float = 16) -> Gateway:
    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    (tmp_path / "site.toml").write_text(example.read_text())
    config = load_site_config(tmp_path / "site.toml")
    store = config.store.model_copy(update={"max_disk_mb": max_disk_mb})
    return Gateway(config.model_copy(update={"store": store}))


def _disk_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


async def test_at_the_cap_readings_wait_in_memory_until_eviction_makes_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(runtime_writer, "CAP_RETRY_S", 0.0)
    gateway = _capped_gateway(tmp_path)
    cap = 16_000_000
    meter = gateway.config.meters[0].id
    # 17 MB of a counter's readings that the platform has not acknowledged: nothing may go
    gateway.store.append_readings(
        [reading(meter, "energy", T0 + i * NS, bytes(2000)) for i in range(8500)]
    )
    gateway.writer.pending = [reading(meter, "energy", T0 + 9000 * NS)]
    assert await gateway.writer.flush() == 0
    status = gateway.status_snapshot()
    assert str(status["store_refusing"]).startswith("disk cap reached"), status
    assert status["store_over_cap"] is True
    assert status["readings_pending"] == 1  # kept, not dropped
    assert gateway.writer.readings_refused == 0
    # the platform acknowledges the first two hours: their readings can go, the reading in
    # memory is written and the store stays under its cap
    seal(gateway.store, meter, T0, T0 + 120 * MIN, "b1", "acked")
    assert await gateway.writer.flush() == 1
    assert gateway.writer.refusal is None
    assert gateway.status_snapshot()["store_refusing"] is None
    assert gateway.store.used_bytes() <= cap  # the file keeps its size: pages are reused
    await gateway.close()


async def test_the_cap_holds_at_every_commit(tmp_path: Path):
    """Eviction runs before the commit that would cross the cap, not once a minute."""
    gateway = _capped_gateway(tmp_path)
    cap = 16_000_000
    meter = gateway.config.meters[0].id
    t = T0
    for period in range(24):  # ~36 MB of readings, twice the cap and more
        every = 15 * MIN // 1500
        gateway.writer.pending = [
            reading(meter, "energy", t + i * every, bytes(1000)) for i in range(1500)
        ]
        while gateway.writer.pending:
            assert await gateway.writer.flush() > 0
            assert _disk_bytes(gateway.config.store.path) <= cap
        end = t + 15 * MIN
        seal(gateway.store, meter, t, end, f"b{period}", "acked")
        t = end
    assert gateway.writer.readings_refused == 0
    assert gateway.store.used_bytes() <= cap
    await gateway.close()


def test_readings_not_yet_streamed_to_the_platform_stay(tmp_path: Path):
    store = open_store(tmp_path)
    minutes = [T0 + m * MIN for m in range(30)]
    store.append_readings([reading("M2", "power", t) for t in minutes])  # gauges, no records
    streamed = store.readings_after(0, 10)[-1][0]  # the stream has the first ten
    store.evict(
        T0 + 30 * MIN, store.evictable_before(T0 + 30 * MIN, keep=KEEP, unsent_from_id=streamed)
    )
    assert timestamps(store, "M2", "power") == minutes[10:]  # not one unsent reading went
    store.evict(
        T0 + 30 * MIN, store.evictable_before(T0 + 30 * MIN, keep=KEEP)
    )  # without the stream
    assert timestamps(store, "M2", "power") == minutes[29:]
