"""The gateway process: collectors -> store -> aggregation -> outbox -> cloud sync.

One asyncio TaskGroup supervises a collector task per meter (a failing one is logged and
restarted, never taking the others down), the batched store writer, the aggregator and the
MQTT sync. All SQLite work on the gateway's connection runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import cloud_sync
from collectors import CollectorStats, Shared, create_collector
from gateway.aggregation import PeriodInput, aggregate
from gateway.config import MeterConfig, SiteConfig
from gateway.factors import FactorSet
from gateway.mirror import Mirror
from gateway.models import ActivityRecord, PointKind, Reading
from gateway.periods import NS, period_start_ns
from gateway.store import EvictionResult, Store, transaction

log = logging.getLogger(__name__)
T = TypeVar("T")
STATUS_INTERVAL_S = 5.0
RETENTION_INTERVAL_S = 60.0


def status_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".status.json")


@dataclass
class MeterStatus:
    """Live view of one meter for status output."""

    readings: int = 0
    bad: int = 0
    last_values: dict[str, Decimal] = field(default_factory=dict)
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
        self.sync = cloud_sync.CloudSync(
            config.store.path,
            cloud_sync.Topics(config.mqtt.topic_prefix, config.enterprise.uscc, config.gateway_id),
            cloud_sync.MqttSettings(
                host=config.mqtt.host,
                port=config.mqtt.port,
                client_id=config.mqtt.client_id or f"tanji-{config.gateway_id}",
                keepalive_s=config.mqtt.keepalive_s,
                ack_timeout_s=config.mqtt.ack_timeout_s,
            ),
            clock=clock,
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
        self._pending: list[Reading] = []
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tanji-db")
        self._collector_tasks: list[asyncio.Task[None]] = []
        self._shared = Shared()  # connections that collectors of several meters share
        self.mirror = Mirror(config.mirror, self.store, self._db) if config.mirror else None

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
                    self._pending.extend(readings)
                    self._note(status, readings)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one collector must not stop the others
                status.restarts += 1
                log.exception("collector of meter %s failed; restarting in 5 s", meter.id)
                await asyncio.sleep(5)

    @staticmethod
    def _note(status: MeterStatus, readings: list[Reading]) -> None:
        status.readings += len(readings)
        status.last_ts_ns = readings[-1].ts_ns if readings else status.last_ts_ns
        last = status.last_values
        for r in readings:
            if r.value is None:
                status.bad += 1
                status.last_reason = r.quality.reason
            else:
                last[r.point] = r.value
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
            "meters": {
                meter_id: {
                    "readings": st.readings,
                    "bad": st.bad,
                    "last_reason": st.last_reason,
                    "last_ts_ns": str(st.last_ts_ns) if st.last_ts_ns else None,
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
        sealed = period_start_ns(now - int(agg.grace_s * NS), agg.interval_s, self._tz)
        self.disk = await self._db(
            lambda: self.store.enforce_limits(
                now, sealed, int(cfg.retention_days * 86400 * NS), int(cfg.max_disk_mb * 1e6)
            )
        )
        if self.disk.deleted:
            log.info("store: %d readings evicted", self.disk.deleted)
        return self.disk

    # --- aggregation -------------------------------------------------------------------------

    async def _aggregate_loop(self) -> None:
        period = self.config.aggregation.interval_s
        while True:
            await asyncio.sleep(min(5.0, max(0.5, period / 4)))
            await self.aggregate_due()

    async def aggregate_due(self) -> list[ActivityRecord]:
        """Seal every period that ended more than `grace_s` ago into records and the outbox."""
        await self.flush()
        now = self._clock()
        records = await self._db(lambda: self._aggregate_and_enqueue(now))
        if records:
            self.records_created += len(records)
            self.sync.wake()
        return records

    def _aggregate_and_enqueue(self, now_ns: int) -> list[ActivityRecord]:
        agg = self.config.aggregation
        interval_ns = agg.interval_s * NS
        horizon = now_ns - int(agg.grace_s * NS)
        records: list[ActivityRecord] = []
        for meter in self.config.meters:
            gap_limit_s = agg.gap_limit_s or 3 * meter.connection.poll_interval_s
            domain_meter = meter.meter()
            for point in meter.points:
                if point.kind is not PointKind.COUNTER:
                    continue
                start = self.store.last_period_end_ns(meter.id, point.name)
                if start is None:
                    first = self.store.first_reading_ns(meter.id, point.name)
                    if first is None:
                        continue
                    start = period_start_ns(first, agg.interval_s, self._tz)
                while start + interval_ns <= horizon:
                    end = start + interval_ns
                    records.append(
                        aggregate(
                            PeriodInput(
                                uscc=self.config.enterprise.uscc,
                                gateway_id=self.config.gateway_id,
                                meter=domain_meter,
                                point=point,
                                start_ns=start,
                                end_ns=end,
                                previous=self.store.last_good_before(meter.id, point.name, start),
                                readings=self.store.readings(meter.id, point.name, start, end),
                                gap_limit_ns=int(gap_limit_s * NS),
                                tz=self._tz,
                                factors=self.factors,
                            )
                        )
                    )
                    start = end
        if records:
            size = self.config.mqtt.batch_size
            with transaction(self.store.conn):
                batch_ids = cloud_sync.enqueue(
                    self.store.conn,
                    self.config.enterprise.uscc,
                    self.config.gateway_id,
                    records,
                    size,
                    now_ns,
                )
                self.store.insert_activity(
                    records, now_ns, [batch_ids[i // size] for i in range(len(records))]
                )
        return records

    async def drain(self, timeout_s: float) -> bool:
        """Stop collecting, seal what is complete and wait for the platform to ack it all.

        Call while `run()` is still running (the sync must be up); True when nothing is left
        pending in the outbox.
        """
        for task in self._collector_tasks:
            task.cancel()
        await asyncio.gather(*self._collector_tasks, return_exceptions=True)
        await self.aggregate_due()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (await self.sync.stats()).pending == 0:
                return True
            self.sync.wake()
            await asyncio.sleep(0.2)
        return False

    async def close(self) -> None:
        self._shared.close()
        if self.mirror is not None:
            self.mirror.close()
        await self._db(self.store.close)
        self._db_thread.shutdown(wait=True)
