"""Sealing periods and revising them: a period is sealed once its end value is known, and late
readings (a backfill after an outage) give new revisions that supersede the old ones, which
stay. Real Gateway aggregation on a real SQLite file; nothing is sent (the sync is not run)."""

from __future__ import annotations

import asyncio
import itertools
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.activity.counters import CONTEXT
from gateway.config import parse_site_config
from gateway.models import ActivityFlag, PointKind, Quality, Quantity, Reading
from gateway.runtime.supervisor import Gateway
from gateway.runtime.writer import KEEP

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"
NS = 1_000_000_000
MIN = 60 * NS
HOUR = 60 * MIN
T0 = 1_764_000_000 * NS - (1_764_000_000 * NS) % (15 * MIN)  # a 15-minute boundary
POLL_S = 10


def energy(t_ns: int, kwh: Decimal | None) -> Reading:
    """The main meter's energy counter at t (None: it did not answer, a bad reading)."""
    return Reading.trusted(
        "L1-MAIN",
        "active_energy_import",
        Quantity.ACTIVE_ENERGY_IMPORT,
        PointKind.COUNTER,
        "kWh",
        t_ns,
        b"\x00\x00\x00\x00" if kwh is not None else b"",
        kwh,
        Quality.good() if kwh is not None else Quality.bad("timeout"),
    )


def counter(t_ns: int) -> Decimal:
    """3.6 kWh an hour on a 0.01 kWh register: 0.01 kWh every 10 s."""
    return Decimal((t_ns - T0) // (10 * NS)) / 100 + 1000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def gateway(tmp_path: Path):
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "g.db")
    data["aggregation"] = {"interval": "15min", "grace_s": 5}
    data["meters"][0]["connection"]["poll_interval_s"] = POLL_S
    clock = Clock()
    gw = Gateway(parse_site_config(data), clock=clock)
    yield gw, clock
    asyncio.run(gw.close())


def readings(start_ns: int, end_ns: int) -> list[Reading]:
    return [energy(t, counter(t)) for t in range(start_ns + 3 * NS, end_ns, POLL_S * NS)]


def seal(gw: Gateway, clock: Clock, now_ns: int):
    clock.now = now_ns
    return asyncio.run(gw.aggregator.due())


def latest(gw: Gateway) -> list:
    return gw.store.sealed_after("L1-MAIN", "active_energy_import", 0)


def test_a_period_is_sealed_only_once_its_end_value_is_known(gateway):
    gw, clock = gateway
    gw.store.append_readings(readings(T0, T0 + 15 * MIN))
    # the period ended, but no reading after it yet: its end value would be a guess
    assert seal(gw, clock, T0 + 15 * MIN + 10 * NS) == []
    # nor with fewer than CONTEXT readings after it: the first could still be a glitch
    end = T0 + 15 * MIN
    after = readings(end, end + CONTEXT * POLL_S * NS)
    gw.store.append_readings(after[:-1])
    assert seal(gw, clock, after[-2].ts_ns + 1) == []
    gw.store.append_readings(after[-1:])
    (record,) = seal(gw, clock, after[-1].ts_ns + 1)
    assert record.interval == "15min"
    assert record.end.interpolated
    assert ActivityFlag.INTERPOLATED in record.flags
    # the counter is linear: the interpolated end is the true value at the boundary
    assert record.end.value == counter(T0 + 15 * MIN)
    assert record.quantity == counter(T0 + 15 * MIN) - counter(T0 + 3 * NS)


def test_without_readings_a_period_is_sealed_after_the_gap_limit_and_flagged(gateway):
    gw, clock = gateway
    gw.store.append_readings(readings(T0, T0 + 15 * MIN))
    gap_limit = 3 * POLL_S * NS
    assert seal(gw, clock, T0 + 15 * MIN + gap_limit) == []  # grace not yet over
    (record,) = seal(gw, clock, T0 + 15 * MIN + gap_limit + 6 * NS)
    assert ActivityFlag.GAP in record.flags
    assert not record.end.interpolated
    assert record.end.value == counter(T0 + 14 * MIN + 53 * NS)  # held at the last reading


def test_late_readings_revise_sealed_periods_and_keep_the_old_revisions(gateway):
    gw, clock = gateway
    # readings 10:00-10:40 with an outage 10:12-10:22 (the meter's energy is not lost: the
    # counter kept counting; the readings come in later, as a backfill)
    outage = (T0 + 12 * MIN, T0 + 22 * MIN)
    gw.store.append_readings(readings(T0, outage[0]) + readings(outage[1], T0 + 40 * MIN))
    first = seal(gw, clock, T0 + 40 * MIN)
    assert [r.period_start.minute for r in first] == [0, 15]  # 10:30 is not over yet
    assert all(ActivityFlag.GAP in r.flags for r in first)
    assert {r.revision for r in first} == {0}
    # the gap 10:11:53-10:22:03 lands whole where measurement resumed (10:15-10:30)
    assert first[0].quantity == counter(outage[0] - 7 * NS) - counter(T0 + 3 * NS)

    gw.store.append_readings(readings(*outage))
    revised = seal(gw, clock, T0 + 40 * MIN + 1 * NS)
    assert [(r.period_start.minute, r.revision) for r in revised] == [(0, 1), (15, 1)]
    for old, new in zip(first, revised, strict=True):
        assert new.supersedes == old.record_id
        assert new.record_id != old.record_id
    assert revised[0].coverage == (900 - 3) / 900  # the first reading came at 10:00:03
    assert ActivityFlag.GAP not in revised[1].flags
    assert revised[1].coverage == 1
    assert revised[0].quantity == counter(T0 + 15 * MIN) - counter(T0 + 3 * NS)
    # the sum over the latest revisions is still the counter's advance
    assert sum(r.quantity for r in revised) == sum(r.quantity for r in first)

    # the old revisions are kept, the new ones are in the outbox, nothing is revised twice
    rows = gw.store.conn.execute("SELECT COUNT(*), COUNT(DISTINCT batch_id) FROM activity_records")
    assert rows.fetchone() == (4, 2)
    pending = gw.store.conn.execute("SELECT SUM(record_count) FROM outbox").fetchone()[0]
    assert pending == 4
    assert seal(gw, clock, T0 + 40 * MIN + 2 * NS) == []
    assert {r.revision for r in latest(gw)} == {1}
    assert gw.aggregator.records_revised == 2


def test_a_late_reading_that_changes_nothing_gives_no_revision_but_a_bad_one_does(gateway):
    gw, clock = gateway
    gw.store.append_readings(readings(T0, T0 + 20 * MIN))
    (first,) = seal(gw, clock, T0 + 20 * MIN)
    # a reading exactly on the counter's line between its neighbours changes no figure, but
    # it is a reading the record was not computed from: the evidence changes, so it revises
    t = T0 + 5 * MIN + 8 * NS
    gw.store.append_readings([energy(t, counter(t))])
    (second,) = seal(gw, clock, T0 + 20 * MIN + NS)
    assert second.quantity == first.quantity
    assert second.reading_count == first.reading_count + 1
    assert second.readings_root != first.readings_root
    # readings after the sealed periods change nothing sealed
    gw.store.append_readings(readings(T0 + 20 * MIN, T0 + 25 * MIN))
    assert seal(gw, clock, T0 + 25 * MIN) == []


def test_late_readings_survive_a_restart_of_the_gateway(tmp_path: Path):
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "g.db")
    data["aggregation"] = {"interval": "15min", "grace_s": 5}
    data["meters"][0]["connection"]["poll_interval_s"] = POLL_S
    config = parse_site_config(data)
    clock = Clock()
    gw = Gateway(config, clock=clock)
    gw.store.append_readings(readings(T0, T0 + 5 * MIN) + readings(T0 + 10 * MIN, T0 + 20 * MIN))
    assert len(seal(gw, clock, T0 + 20 * MIN)) == 1
    gw.store.append_readings(readings(T0 + 5 * MIN, T0 + 10 * MIN))  # stored, then a crash
    asyncio.run(gw.close())
    gw = Gateway(config, clock=clock)
    (revised,) = seal(gw, clock, T0 + 20 * MIN + NS)
    assert revised.revision == 1
    asyncio.run(gw.close())


def gateway_on(path: Path, interval: str, clock: Clock) -> Gateway:
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(path)
    data["aggregation"] = {"interval": interval, "grace_s": 5}
    data["meters"][0]["connection"]["poll_interval_s"] = POLL_S
    return Gateway(parse_site_config(data), clock=clock)


def test_changing_the_interval_keeps_periods_contiguous_and_revisions_on_their_own_spans(
    tmp_path: Path,
):
    clock = Clock()
    gw = gateway_on(tmp_path / "g.db", "15min", clock)
    gw.store.append_readings(readings(T0, T0 + 20 * MIN))
    assert [r.interval for r in seal(gw, clock, T0 + 20 * MIN)] == ["15min"]
    asyncio.run(gw.close())

    gw = gateway_on(tmp_path / "g.db", "hour", clock)
    gw.store.append_readings(readings(T0 + 20 * MIN, T0 + 2 * 60 * MIN + 20 * MIN))
    sealed = seal(gw, clock, T0 + 2 * 60 * MIN + 20 * MIN)
    spans = [(r.period_start.minute, (r.period_end - r.period_start).seconds // 60) for r in sealed]
    assert spans == [(15, 45), (0, 60)]  # up to the hour's boundary, then whole hours
    # a late reading inside the old 15-minute period revises it over its own span
    t = T0 + 5 * MIN + 8 * NS
    gw.store.append_readings([energy(t, counter(t))])
    (revised,) = seal(gw, clock, T0 + 2 * 60 * MIN + 21 * MIN)
    assert (revised.interval, revised.revision) == ("15min", 1)
    assert revised.period_start.minute == 0
    records = gw.store.sealed_after("L1-MAIN", "active_energy_import", 0)
    for left, right in itertools.pairwise(records):
        assert left.period_end == right.period_start  # no overlap, no hole
    asyncio.run(gw.close())


def test_late_readings_for_evicted_periods_are_kept_but_not_used(gateway):
    """Readings of a sealed, acknowledged period were evicted (the disk cap); a reading for
    that period arriving now cannot revise it, and must not shift the next period's start
    either: it is set aside, and the records still add up."""
    gw, clock = gateway
    end = T0 + 15 * MIN
    rs = readings(T0, T0 + 32 * MIN)
    late = [r for r in rs if r.ts_ns == end + 3 * NS]
    settled = end + (CONTEXT + 1) * POLL_S * NS  # CONTEXT readings after the end: sealed
    gw.store.append_readings([r for r in rs if r.ts_ns <= settled and r not in late])
    (first,) = seal(gw, clock, settled)
    gw.store.conn.execute("UPDATE outbox SET state='acked'")  # the platform has it
    assert gw.store.evict(2**62, gw.store.evictable_before(end, keep=KEEP)) > 0
    gw.store.append_readings(late + [r for r in rs if r.ts_ns > settled])
    (second,) = seal(gw, clock, T0 + 32 * MIN)
    assert second.revision == 0  # the sealed period is not revised
    assert second.start == first.end  # and the next one starts where it ended
    assert gw.aggregator.readings_set_aside == 1
    assert gw.store.readings("L1-MAIN", "active_energy_import", end, end + 10 * NS) == []
    stored = gw.store.conn.execute("SELECT COUNT(*) FROM readings WHERE ts_ns = ?", (end + 3 * NS,))
    assert stored.fetchone()[0] == 1  # kept as evidence


def test_a_site_can_hold_back_records_without_a_valid_calibration(tmp_path: Path):
    """send_without_valid_calibration = false: such records are stored, in held batches that
    are never sent (nor evicted), and counted in the status."""
    from cloud_sync.outbox import Outbox

    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "g.db")
    data["aggregation"] = {
        "interval": "15min",
        "grace_s": 5,
        "send_without_valid_calibration": False,
    }
    data["meters"][0]["connection"]["poll_interval_s"] = POLL_S
    data["meters"][0]["calibration"]["due_date"] = "2025-01-01"  # T0 is in November 2025
    data["meters"][0]["calibration"]["calibration_date"] = "2024-01-01"
    clock = Clock()
    gw = Gateway(parse_site_config(data), clock=clock)
    gw.store.append_readings(readings(T0, T0 + 20 * MIN))
    (record,) = seal(gw, clock, T0 + 20 * MIN)
    assert record.calibration_status == "expired"
    outbox = Outbox(gw.store.conn)
    assert outbox.stats().held == 1
    assert outbox.stats().pending == 0
    assert outbox.due(T0 + 21 * MIN, 0, 0, 100, 100) == []
    assert gw.status_snapshot()["records_held"] == 1
    asyncio.run(gw.close())
    again = Gateway(parse_site_config(data), clock=clock)  # a restart does not forget them
    assert again.status_snapshot()["records_held"] == 1
    asyncio.run(again.close())


def test_each_reading_gets_its_meters_calibration_status_at_its_time(gateway):
    gw, _ = gateway
    # the example certificate runs 2026-03-01 .. 2027-02-28; T0 is in November 2025
    later = T0 + 200 * 86400 * NS
    statuses = gw.calibration_status_of([energy(T0, Decimal(1)), energy(later, Decimal(2))])
    assert statuses == ["not-yet-valid", "valid"]


def test_the_mirror_tags_readings_with_the_gateways_registry(tmp_path: Path):
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "g.db")
    data["mirror"] = {"url": "http://127.0.0.1:9", "org": "o", "bucket": "b"}  # never contacted
    gw = Gateway(parse_site_config(data), clock=Clock())
    assert gw.mirror is not None
    cursor = gw.mirror.cursor  # what the mirror drains (gateway.drain)
    assert asyncio.run(cursor.next(10)) == (0, [])
    gw.store.append_readings([energy(T0, Decimal(1))])
    _, batch = asyncio.run(cursor.next(10))
    assert [status for _, status in batch] == ["not-yet-valid"]  # the certificate starts in 2026
    asyncio.run(gw.close())


def test_readings_waiting_in_memory_hold_back_sealing(gateway):
    """Review of issue 15: while the store refused readings (disk full), they waited in
    memory and the aggregator sealed periods by the gap-limit rule without them; stored
    later, they came as late readings. Nothing is sealed over a reading still waiting."""
    gw, clock = gateway
    end = T0 + 15 * MIN
    rs = readings(T0, end + (CONTEXT + 1) * POLL_S * NS)
    stored = [r for r in rs if r.ts_ns < end + 3 * POLL_S * NS]
    gw.store.append_readings(stored)
    gw.writer.pending = [r for r in rs if r not in stored]  # refused: waiting in memory
    gw.writer.flush = _no_flush  # type: ignore[method-assign]  # the store still refuses them
    assert seal(gw, clock, end + HOUR) == []
    gw.store.append_readings(gw.writer.pending)  # room again: stored
    gw.writer.pending = []
    first = seal(gw, clock, end + HOUR + NS)[0]  # and the silent periods after it
    assert first.end.value == counter(end)
    assert first.end.interpolated  # from the readings around its end, all of them stored


async def _no_flush() -> int:
    return 0


def test_a_meter_that_went_silent_and_came_back_revises_nothing(tmp_path: Path):
    """A fresh-clone trial: after a meter was silent for two minutes (timeouts, stored as
    bad readings) the periods sealed meanwhile got revisions that changed no figure, each
    sent to the platform. The run after the gap is new: the sealed periods keep their
    records."""
    clock = Clock()
    gw = gateway_on(tmp_path / "g.db", "1min", clock)
    silent = (T0 + 8 * MIN, T0 + 10 * MIN)
    records = []
    for t in range(T0 + 3 * NS, T0 + 20 * MIN, POLL_S * NS):
        if silent[0] <= t < silent[1]:
            gw.store.append_readings([energy(t, None)])
        else:
            gw.store.append_readings([energy(t, counter(t))])
        records += seal(gw, clock, t + NS)
    assert len(records) == 18  # 00:00-00:18, each once
    assert {r.revision for r in records} == {0}
    asyncio.run(gw.close())
