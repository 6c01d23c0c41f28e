"""The gateway process: collectors -> store -> aggregation -> outbox -> cloud sync.

One asyncio TaskGroup supervises a collector task per meter (a failing one is logged and
restarted, never taking the others down), the batched store writer, the aggregator and the
MQTT sync. All SQLite work on the gateway's connection runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import cloud_sync
from collectors import CollectorStats, Shared, create_collector
from gateway.aggregation import PeriodInput, aggregate, revise
from gateway.calibration import Registry
from gateway.config import MeterConfig, SiteConfig
from gateway.counters import CONTEXT
from gateway.factors import FactorSet
from gateway.metrology import Entry, status_on
from gateway.mirror import Mirror, RunInDb
from gateway.models import ActivityRecord, PointKind, PointSpec, Reading
from gateway.periods import NS, Interval, datetime_to_ns, ns_to_datetime
from gateway.store import EvictionResult, Store, transaction

log = logging.getLogger(__name__)
T = TypeVar("T")
STATUS_INTERVAL_S = 5.0
READINGS_CURSOR = "platform-readings"  # the raw readings stream's position (acked up to)
LATE_CURSOR = "aggregation"  # readings up to here were checked for changing sealed periods
RETENTION_INTERVAL_S = 60.0


def status_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".status.json")


@dataclass
class MeterStatus:
    """Live view of one meter for status output."""

    readings: int = 0
    bad: int = 0
    last_values: dict[str, Decimal] = field(default_factory=dict)
    last_labels: dict[str, str] = field(default_factory=dict)  # product code, order now
    last_reason: str | None = None
    last_ts_ns: int | None = None
    restarts: int = 0
    poll: CollectorStats = field(default_factory=CollectorStats)


class Gateway:
    """Runs a site configuration until its `run()` task is cancelled (readings are flushed on
    the way out); `drain()` first seals complete periods and waits for the platform's acks."""

    def __init__(self, config: SiteConfig, clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self._clock = clock
        self._tz = ZoneInfo(config.aggregation.timezone)
        self.store = Store(config.store.path)
        self.store.register_series(
            (m.id, p.name, p.quantity, p.kind, p.unit) for m in config.meters for p in m.points
        )
        cloud_sync.create_schema(self.store.conn)
        self.calibrations = Registry(self.store.conn)
        for note in self.calibrations.sync_site(
            ((m.id, m.calibration) for m in config.meters if m.calibration), clock()
        ):
            log.info("calibration registry: %s", note)
        self.sync = cloud_sync.CloudSync(
            config.store.path,
            cloud_sync.Topics(config.mqtt.topic_prefix, config.enterprise.uscc, config.gateway_id),
            config.mqtt,
            config.mqtt.client_id or f"tanji-{config.gateway_id}",
            clock=clock,
            readings=StoreReadings(self.store, self._db),
        )
        self.meter_status = {m.id: MeterStatus() for m in config.meters}
        self.factors = FactorSet(config.factors)  # checked by the config already
        if self.factors.skipped_unverified:
            log.warning(
                "factors marked unverified are not used (allow_unverified = false): %s",
                ", ".join(self.factors.skipped_unverified),
            )
        self.readings_stored = 0
        self.readings_refused = 0  # at the disk cap with nothing left to evict (logged)
        self.disk = EvictionResult(0, 0, over_cap=False)
        self.records_created = 0
        self.records_revised = 0
        self.readings_set_aside = 0  # late readings for evicted periods (kept, not used)
        self.aggregation_failures = 0
        self.outbox: cloud_sync.OutboxStats | None = None  # backlog, read by the status loop
        # without a valid calibration, held back by the site's choice (also from earlier runs)
        self.records_held = cloud_sync.Outbox(self.store.conn).stats().records_held
        self._pending: list[Reading] = []
        self._aggregating = asyncio.Lock()
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tanji-db")
        self._collector_tasks: list[asyncio.Task[None]] = []
        self._shared = Shared()  # connections that collectors of several meters share
        self.mirror = (
            Mirror(config.mirror, self.store, self._db, self.calibration_status_of)
            if config.mirror
            else None
        )

    def calibration_status_of(self, readings: Sequence[Reading]) -> list[str]:
        """Each reading's meter's calibration status on the reading's local day (on the
        database thread; the registry is read once per meter)."""
        entries: dict[str, Sequence[Entry]] = {}
        out = []
        for r in readings:
            if r.meter_id not in entries:
                entries[r.meter_id] = self.calibrations.entries(r.meter_id)
            day = ns_to_datetime(r.ts_ns, self._tz).date()
            out.append(str(status_on(entries[r.meter_id], day)[0]))
        return out

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn)

    # --- supervision -------------------------------------------------------------------------

    async def run(self) -> None:
        """Collect, store, aggregate and sync until cancelled; flushes readings on the way out."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._collector_tasks = [
                    tg.create_task(self._collect(meter), name=f"collect-{meter.id}")
                    for meter in self.config.meters
                ]
                tg.create_task(self._write_loop(), name="store-writer")
                tg.create_task(self._aggregate_loop(), name="aggregator")
                tg.create_task(self.sync.run(), name="cloud-sync")
                tg.create_task(self._status_loop(), name="status-file")
                tg.create_task(self._retention_loop(), name="retention")
                if self.mirror is not None:
                    tg.create_task(self.mirror.run(), name="influxdb-mirror")
        finally:
            await asyncio.shield(self.flush())

    async def _collect(self, meter: MeterConfig) -> None:
        status = self.meter_status[meter.id]
        while True:
            collector = create_collector(meter.id, meter, self._clock, self._shared)
            status.poll = collector.stats
            try:
                async for readings in collector.stream():
                    self.submit(readings)
                    self._note(status, readings)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one collector must not stop the others
                status.restarts += 1
                log.exception("collector of meter %s failed; restarting in 5 s", meter.id)
                await asyncio.sleep(5)

    def submit(self, readings: list[Reading]) -> None:
        """Take readings for the store (committed within `commit_interval_s`): a collector's
        poll cycle, or older readings a device delivers late (a backfill after an outage),
        which then revise the sealed periods they belong to."""
        self._pending.extend(readings)

    @staticmethod
    def _note(status: MeterStatus, readings: list[Reading]) -> None:
        status.readings += len(readings)
        status.last_ts_ns = readings[-1].ts_ns if readings else status.last_ts_ns
        for r in readings:
            if r.value is not None:
                status.last_values[r.point] = r.value
            elif r.text is not None:
                status.last_labels[r.point] = r.text
            else:
                status.bad += 1
                status.last_reason = r.quality.reason
                continue
            status.last_reason = None

    # --- status ------------------------------------------------------------------------------

    @property
    def status_path(self) -> Path:
        """Where `tanji status` finds the running gateway's latest snapshot."""
        return status_path_for(self.config.store.path)

    def status_snapshot(self) -> dict[str, Any]:
        return {
            "schema": "tanji.gateway-status/1",
            "gateway_id": self.config.gateway_id,
            "written_ns": str(self._clock()),
            "readings_stored": self.readings_stored,
            "readings_refused": self.readings_refused,
            "store_used_mb": round(self.disk.used_bytes / 1e6, 1),
            "store_over_cap": self.disk.over_cap,
            "records_created": self.records_created,
            "records_revised": self.records_revised,
            "readings_set_aside": self.readings_set_aside,
            "aggregation_failures": self.aggregation_failures,
            "records_held": self.records_held,
            "outbox": None
            if self.outbox is None
            else {
                "pending_batches": self.outbox.pending,
                "oldest_pending_age_s": None
                if self.outbox.oldest_pending_ns is None
                else round((self._clock() - self.outbox.oldest_pending_ns) / 1e9, 1),
                "dead_letters": self.outbox.rejected,
                "held_batches": self.outbox.held,
                "records_acked": self.outbox.records_acked,
            },
            "link": self.sync.counters.snapshot(),
            "meters": {
                meter_id: {
                    "readings": st.readings,
                    "bad": st.bad,
                    "last_reason": st.last_reason,
                    "last_ts_ns": str(st.last_ts_ns) if st.last_ts_ns else None,
                    "labels": st.last_labels,
                    "restarts": st.restarts,
                    "poll": st.poll.snapshot(),
                }
                for meter_id, st in self.meter_status.items()
            },
        }

    def write_status(self) -> None:
        """Replace the status file atomically (readers never see half a file)."""
        path = self.status_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status_snapshot(), indent=1), encoding="utf-8")
        os.replace(tmp, path)

    async def _status_loop(self) -> None:
        while True:
            try:
                self.outbox = await self.sync.stats()
            except Exception:  # e.g. the database is locked: the last figures stay
                log.debug("outbox statistics not read this time", exc_info=True)
            try:
                self.write_status()
            except OSError as exc:
                log.warning("cannot write %s: %s", self.status_path, exc)
            await asyncio.sleep(STATUS_INTERVAL_S)

    # --- store -------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Commit every reading collected so far (one durable transaction)."""
        batch, self._pending = self._pending, []
        if batch and self.disk.over_cap:
            # the cap is full of readings the platform has not acknowledged yet: refusing new
            # ones (a gap the activity records will show) beats exceeding the disk
            self.readings_refused += len(batch)
            log.error(
                "store at its disk cap (%.0f MB used) with nothing acknowledged to evict:"
                " %d readings not stored",
                self.disk.used_bytes / 1e6,
                len(batch),
            )
            return 0
        if batch:
            try:
                await self._db(lambda: self.store.append_readings(batch))
            except BaseException:
                self._pending[:0] = batch  # keep them for the next attempt
                raise
            self.readings_stored += len(batch)
        return len(batch)

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.store.commit_interval_s)
            await self.flush()

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_limits()
            except Exception:  # e.g. the disk is full or the file locked: try again later
                log.exception("store: retention and disk cap not enforced this time")
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def enforce_limits(self) -> EvictionResult:
        """Evict what retention and the disk cap allow (gateway.store.Store.enforce_limits)."""
        cfg, agg = self.config.store, self.config.aggregation
        now = self._clock()
        sealed = agg.period.start(now - int(agg.grace_s * NS), self._tz)
        streaming = self.sync.readings is not None
        self.disk = await self._db(
            lambda: self.store.enforce_limits(
                now,
                sealed,
                int(cfg.retention_days * 86400 * NS),
                int(cfg.max_disk_mb * 1e6),
                (self.store.cursor(READINGS_CURSOR) or 0) if streaming else None,
            )
        )
        if self.disk.deleted:
            log.info("store: %d readings evicted", self.disk.deleted)
        return self.disk

    # --- aggregation -------------------------------------------------------------------------

    async def _aggregate_loop(self) -> None:
        period = self.config.aggregation.period.seconds or 900
        while True:
            await asyncio.sleep(min(5.0, max(0.5, period / 4)))
            try:
                await self.aggregate_due()
            except Exception:  # e.g. the disk is full: the readings are safe, try again
                self.aggregation_failures += 1
                log.exception("aggregation pass failed; trying again in the next pass")

    async def aggregate_due(self, final: bool = False) -> list[ActivityRecord]:
        """Seal every period that ended more than `grace_s` ago into records and the outbox,
        and revise sealed ones that late readings changed. A period is sealed once CONTEXT
        good readings after its end exist (they decide whether the readings around its end
        are glitches: gateway/counters.py) or the gap limit has passed since the last of
        them; `final` (no more readings coming: collection stopped) seals without.

        Records are computed one meter at a time on the database thread, so the store writer
        gets its turn in between (sealing a 15-minute period of 1000 meters takes seconds:
        bench/aggregate_pass.py), then written with their outbox batches in one transaction.
        A crash before that loses nothing: the next pass computes the same records again."""
        async with self._aggregating:  # the loop's pass and drain's never interleave
            await self.flush()
            now = self._clock()
            horizon = now - int(self.config.aggregation.grace_s * NS)
            new = await self._db(self._new_readings)
            cursor, up_to, _ = new
            records: list[ActivityRecord] = []
            for meter in self.config.meters:
                try:
                    records += await self._db(
                        functools.partial(self._meter_records, meter, new, horizon, final)
                    )
                except Exception:  # one meter's bad data must not hold up the others' records
                    self.aggregation_failures += 1
                    log.exception("aggregation of meter %s failed; retried next pass", meter.id)
            if records or up_to != cursor:
                await self._db(lambda: self._enqueue(records, up_to, now))
        if records:
            self.records_created += len(records)
            self.records_revised += sum(1 for r in records if r.revision)
            self.sync.wake()
        return records

    def _new_readings(self) -> tuple[int | None, int, dict[tuple[str, str], int]]:
        """The late-readings cursor, the last reading id now, and per point the earliest
        timestamp among the readings stored in between."""
        up_to = self.store.last_reading_id()
        cursor = self.store.cursor(LATE_CURSOR)
        earliest = self.store.earliest_new(cursor, up_to) if cursor is not None else {}
        return cursor, up_to, earliest

    def _meter_records(
        self,
        meter: MeterConfig,
        new: tuple[int | None, int, dict[tuple[str, str], int]],
        horizon: int,
        final: bool,
    ) -> list[ActivityRecord]:
        cursor, up_to, earliest = new
        periods = _PointPeriods(self, meter)
        records: list[ActivityRecord] = []
        for point in meter.points:
            if point.kind is not PointKind.COUNTER:
                continue
            sealed_end = self.store.last_period_end_ns(meter.id, point.name)
            late = earliest.get((meter.id, point.name))
            if sealed_end is not None and late is not None and cursor is not None:
                records += periods.revise(point, late, sealed_end, cursor, up_to)
            records += periods.seal(point, sealed_end, horizon, final)
        return records

    def _enqueue(self, records: list[ActivityRecord], up_to: int, now_ns: int) -> None:
        """Records and their outbox batches in one transaction; where the site says so,
        records without a valid calibration go into held batches (stored, not sent)."""
        size = self.config.mqtt.batch_size
        hold = not self.config.aggregation.send_without_valid_calibration
        held = [r for r in records if hold and r.calibration_status != "valid"]
        sent = [r for r in records if not (hold and r.calibration_status != "valid")]
        with transaction(self.store.conn):
            for group, is_held in ((sent, False), (held, True)):
                if not group:
                    continue
                batch_ids = cloud_sync.enqueue(
                    self.store.conn,
                    self.config.enterprise.uscc,
                    self.config.gateway_id,
                    group,
                    size,
                    now_ns,
                    held=is_held,
                    compress=self.config.mqtt.compression == "gzip",
                )
                self.store.insert_activity(
                    group, now_ns, [batch_ids[i // size] for i in range(len(group))]
                )
            self.store.set_cursor(LATE_CURSOR, up_to)
        self.records_held += len(held)

    async def drain(self, timeout_s: float) -> bool:
        """Stop collecting, seal what is complete and wait for the platform to ack it all.

        Call while `run()` is still running (the sync must be up); True when nothing is left
        pending in the outbox (nor in the raw readings stream, when it is on).
        """
        for task in self._collector_tasks:
            task.cancel()
        await asyncio.gather(*self._collector_tasks, return_exceptions=True)
        await self.aggregate_due(final=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (await self.sync.stats()).pending == 0 and await self._readings_streamed():
                return True
            self.sync.wake()
            await asyncio.sleep(0.2)
        return False

    async def _readings_streamed(self) -> bool:
        """Whether the raw readings stream (when on) has every stored reading acked."""
        if self.sync.readings is None:
            return True
        store = self.store
        return await self._db(
            lambda: (store.cursor(READINGS_CURSOR) or 0) >= store.last_reading_id()
        )

    async def close(self) -> None:
        self._shared.close()
        if self.mirror is not None:
            self.mirror.close()
        await self._db(self.store.close)
        self._db_thread.shutdown(wait=True)


class StoreReadings:
    """The store's readings for the optional raw readings stream (cloud_sync.ReadingsSource),
    read on the gateway's database thread from a cursor kept in the store."""

    def __init__(self, store: Store, db: RunInDb) -> None:
        self._store = store
        self._db = db

    async def next(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        store = self._store

        def read() -> list[tuple[int, Reading]]:
            return store.readings_after(store.cursor(READINGS_CURSOR) or 0, limit)

        rows = await self._db(read)
        return (rows[-1][0] if rows else 0), [cloud_sync.reading_message(i, r) for i, r in rows]

    async def advance(self, seq: int) -> None:
        def move() -> None:
            with transaction(self._store.conn):
                self._store.set_cursor(READINGS_CURSOR, seq)

        await self._db(move)


class _PointPeriods:
    """Seals and revises the periods of one meter's counters (on the database thread)."""

    def __init__(self, gw: Gateway, meter: MeterConfig) -> None:
        agg = gw.config.aggregation
        self.gw, self.store, self.tz, self.interval = gw, gw.store, gw._tz, agg.period
        self.meter = meter.meter()
        self.calibrations = gw.calibrations.entries(meter.id)
        self.gap_limit_ns = int((agg.gap_limit_s or 3 * meter.connection.poll_interval_s) * NS)

    def record(
        self, point: PointSpec, start: int, end: int, interval: Interval | None = None
    ) -> ActivityRecord:
        m, name = self.meter.id, point.name
        return aggregate(
            PeriodInput(
                uscc=self.gw.config.enterprise.uscc,
                gateway_id=self.gw.config.gateway_id,
                meter=self.meter,
                point=point,
                interval=interval or self.interval,
                start_ns=start,
                end_ns=end,
                before=self.store.good_before(m, name, start, CONTEXT),
                readings=self.store.readings(m, name, start, end),
                after=self.store.good_from(m, name, end, CONTEXT),
                gap_limit_ns=self.gap_limit_ns,
                tz=self.tz,
                factors=self.gw.factors,
                calibrations=self.calibrations,
            )
        )

    def seal(
        self, point: PointSpec, sealed_end: int | None, horizon: int, final: bool
    ) -> list[ActivityRecord]:
        """Records of the periods after `sealed_end` that are complete by `horizon`. After a
        change of `[aggregation] interval` the first one runs from the last sealed end to the
        next boundary of the new interval."""
        start = sealed_end
        if start is None:
            first = self.store.first_reading_ns(self.meter.id, point.name)
            if first is None:
                return []
            start = self.interval.start(first, self.tz)
        out = []
        while (end := self.interval.end(self.interval.start(start, self.tz), self.tz)) <= horizon:
            after = self.store.good_from(self.meter.id, point.name, end, CONTEXT)
            latest = after[-1].ts_ns if after else end
            if len(after) < CONTEXT and latest + self.gap_limit_ns > horizon and not final:
                break  # what the counter did around `end` is not settled yet
            out.append(self.record(point, start, end))
            start = end
        return out

    def revise(
        self, point: PointSpec, late_ns: int, sealed_end: int, after_id: int, up_to_id: int
    ) -> list[ActivityRecord]:
        """New revisions of the sealed periods that the readings stored in (after_id,
        up_to_id] (the earliest at `late_ns`) changed, recomputed over each period's own span;
        new records for periods before the first one sealed."""
        m, name = self.meter.id, point.name
        if late_ns >= sealed_end + self.gap_limit_ns:
            return []  # too late in time to reach a sealed period's end value
        before = self.store.last_good_before(m, name, late_ns)
        if before is not None and before.ts_ns >= sealed_end:
            return []  # the sealed periods' readings and end values are unchanged
        anchor = before.ts_ns if before is not None else late_ns
        sealed = self.store.sealed_after(m, name, anchor)
        first = datetime_to_ns(sealed[0].period_start) if sealed else sealed_end
        spans: list[tuple[int, int, ActivityRecord | None]] = []
        start = self.interval.start(anchor, self.tz)
        while start < first:  # periods older than any record (readings older than all)
            end = min(self.interval.end(start, self.tz), first)
            spans.append((start, end, None))
            start = end
        spans += [(datetime_to_ns(r.period_start), datetime_to_ns(r.period_end), r) for r in sealed]
        if not spans:
            return []
        evicted = self.store.evicted_before(m, name)
        opening = self.store.last_good_before(m, name, spans[0][0])
        if evicted and (spans[0][0] < evicted or opening is None or opening.ts_ns < evicted):
            # those periods lost readings to eviction: recomputing them would be wrong, and
            # revising only the later ones would break the sums; the late readings are kept
            # as evidence but set aside, so later periods do not use them either
            old_following = self.store.following(m, name, sealed_end, up_to_id=after_id)
            until = old_following[0].ts_ns if old_following else sealed_end + self.gap_limit_ns
            n = self.store.set_aside(m, name, after_id, up_to_id, until, "late-for-evicted-period")
            self.gw.readings_set_aside += n
            log.error(
                "meter %s point %s: %d reading(s) arrived for periods whose readings were"
                " evicted (from %s); kept in the store, not aggregated",
                m,
                name,
                n,
                ns_to_datetime(spans[0][0], self.tz).isoformat(),
            )
            return []
        out = []
        for start, end, old in spans:
            interval = Interval.parse(old.interval) if old is not None else self.interval
            new = self.record(point, start, end, interval)
            revised = new if old is None else revise(new, old)
            if revised is not None:
                out.append(revised)
        return out
