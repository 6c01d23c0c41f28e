"""The gateway process: collectors -> store -> aggregation -> outbox -> cloud sync.

One asyncio TaskGroup supervises a collector task per meter (a failing one is logged and
restarted, never taking the others down), the batched store writer, the aggregator and the
MQTT sync. All SQLite work on the gateway's connection runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import cloud_sync
from collectors import Shared, create_collector
from gateway.activity.factors import FactorSet
from gateway.activity.sealing import (
    LATE_CURSOR,
    MeterPeriods,
    NewReadings,
    SiteSealing,
    new_readings,
)
from gateway.config import MeterConfig, SiteConfig
from gateway.errors import TanjiFailure
from gateway.metrology.calibration import Registry
from gateway.metrology.status import Entry, status_on
from gateway.models import ActivityRecord, Reading
from gateway.periods import NS, ns_to_datetime
from gateway.runtime.readings import StoreReadings
from gateway.runtime.status import (
    MeterStatus,
    keep_writing,
    outbox_snapshot,
    status_path_for,
)
from gateway.runtime.writer import (
    Reminder,
    StoreFailed,
    StoreWriter,
    check_store_error,
    describe_error,
)
from gateway.store.diskspace import (
    is_disk_full,
)
from gateway.store.mirror import Mirror
from gateway.store.schema import transaction
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class GatewayFailed(TanjiFailure):
    """A background task failed in a way the gateway does not handle: the process must end
    with a non-zero exit code so that the service manager restarts it."""

    def __init__(self, task: str, cause: BaseException) -> None:
        super().__init__(f"task {task} failed: {describe_error(cause)}")
        self.task = task
        self.cause = cause


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
        self._readings_source = StoreReadings(self.store, self._db)  # raw readings stream
        self.sync = cloud_sync.CloudSync(
            config.store.path,
            cloud_sync.Topics(config.link.topic_prefix, config.enterprise.uscc, config.gateway_id),
            config.link,  # the transport [platform] names
            f"tanji-{config.gateway_id}",  # unless the link's section names the client
            clock=clock,
            readings=self._readings_source,
            delivery=config.delivery,
        )
        self.meter_status = {m.id: MeterStatus() for m in config.meters}
        self.factors = FactorSet(config.factors)  # checked by the config already
        self._sealing = SiteSealing(
            config.enterprise.uscc,
            config.gateway_id,
            config.aggregation.period,
            self._tz,
            self.factors,
        )
        if self.factors.skipped_unverified:
            log.warning(
                "factors marked unverified are not used (allow_unverified = false): %s",
                ", ".join(self.factors.skipped_unverified),
            )
        self.records_created = 0
        self.records_revised = 0
        self.readings_set_aside = 0  # late readings for evicted periods (kept, not used)
        self.aggregation_failures = 0
        self.outbox: cloud_sync.OutboxStats | None = None  # backlog, read by the status loop
        # without a valid calibration, held back by the site's choice (also from earlier runs)
        self.records_held = cloud_sync.Outbox(self.store.conn).stats().records_held
        self._aggregation_trouble = Reminder()
        self._aggregating = asyncio.Lock()
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tanji-db")
        agg = config.aggregation
        self.writer = StoreWriter(
            config.store,
            self.store,
            self._db_thread,
            clock,
            sealed_before=lambda now: agg.period.start(now - int(agg.grace_s * NS), self._tz),
            streaming=self.sync.readings is not None,
        )
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

    @property
    def readings_stored(self) -> int:
        return self.writer.readings_stored

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn)

    # --- supervision -------------------------------------------------------------------------

    async def run(self) -> None:
        """Collect, store, aggregate and sync until cancelled; flushes readings on the way out.

        Each task handles the failures it can (a collector restarts, a full disk makes the
        store refuse readings until space returns, the sync reconnects); any other failure
        (StoreFailed among them) stops every task and raises GatewayFailed naming the task
        and the cause, so the process can exit non-zero and be restarted, never live on
        doing nothing."""
        self.writer.take_reserve()
        try:
            async with asyncio.TaskGroup() as tg:

                def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
                    return tg.create_task(self._supervised(name, coro), name=name)

                self._collector_tasks = [
                    start(self._collect(meter), f"collect-{meter.id}")
                    for meter in self.config.meters
                ]
                start(self.writer.write_loop(), "store-writer")
                start(self._aggregate_loop(), "aggregator")
                start(self.sync.run(), "cloud-sync")
                start(
                    keep_writing(self.status_path, self._refresh, self.status_snapshot),
                    "status-file",
                )
                start(self.writer.retention_loop(), "retention")
                if self.mirror is not None:
                    start(self.mirror.run(), "influxdb-mirror")
        except BaseExceptionGroup as group:
            failed = [e for e in group.exceptions if isinstance(e, GatewayFailed)]
            if not failed or len(failed) < len(group.exceptions):
                raise  # not a task's failure: a bug here, shown as it is
            raise failed[0] from None
        finally:
            await asyncio.shield(self.writer.last_flush())

    async def _supervised(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Run one task; a failure it did not handle (or its end: every task runs until
        cancelled) becomes GatewayFailed, which stops the gateway."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("task %s failed: %s; stopping the gateway", name, describe_error(exc))
            log.info("task %s failed", name, exc_info=True)  # the details, with --verbose
            raise GatewayFailed(name, exc) from exc
        raise GatewayFailed(name, RuntimeError("ended while the gateway was running"))

    async def _collect(self, meter: MeterConfig) -> None:
        status = self.meter_status[meter.id]
        while True:
            collector = create_collector(meter.id, meter, self._clock, self._shared)
            status.poll = collector.stats
            try:
                async for readings in collector.stream():
                    self.submit(readings)
                    status.note(readings)
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
        self.writer.submit(readings)

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
            **self.writer.snapshot(),
            "records_created": self.records_created,
            "records_revised": self.records_revised,
            "readings_set_aside": self.readings_set_aside,
            "aggregation_failures": self.aggregation_failures,
            "records_held": self.records_held,
            "outbox": outbox_snapshot(self.outbox, self._clock()),
            "link": self.sync.counters.snapshot(),
            "meters": {meter_id: st.snapshot() for meter_id, st in self.meter_status.items()},
        }

    async def _refresh(self) -> None:
        self.outbox = await self.sync.stats()

    # --- aggregation -------------------------------------------------------------------------

    async def _aggregate_loop(self) -> None:
        period = self.config.aggregation.period.seconds or 900
        while True:
            await asyncio.sleep(min(5.0, max(0.5, period / 4)))
            try:
                await self.aggregate_due()
            except StoreFailed:  # met committing the readings first: ends the gateway
                raise
            except Exception as exc:  # e.g. the disk is full: the readings are safe, try again
                check_store_error(exc, self.config.store.path)  # a dead disk ends the gateway
                self.aggregation_failures += 1
                if is_disk_full(exc, self.config.store.path):
                    self._aggregation_trouble.note(
                        logging.WARNING,
                        "aggregation cannot write its records: %s; tried again every pass",
                        describe_error(exc),
                    )
                else:
                    log.exception("aggregation pass failed; trying again in the next pass")
            else:
                self._aggregation_trouble.clear("aggregation writes its records again")

    async def aggregate_due(self, final: bool = False) -> list[ActivityRecord]:
        """Seal every period that ended more than `grace_s` ago into records and the outbox,
        and revise sealed ones that late readings changed. A period is sealed once CONTEXT
        good readings after its end exist (they decide whether the readings around its end
        are glitches: gateway/activity/counters.py) or the gap limit has passed since the last of
        them; `final` (no more readings coming: collection stopped) seals without.

        Records are computed one meter at a time on the database thread, so the store writer
        gets its turn in between (sealing a 15-minute period of 1000 meters takes seconds:
        bench/aggregate_pass.py), then written with their outbox batches in one transaction.
        A crash before that loses nothing: the next pass computes the same records again."""
        async with self._aggregating:  # the loop's pass and drain's never interleave
            await self.writer.flush()
            now = self._clock()
            horizon = now - int(self.config.aggregation.grace_s * NS)
            if self.writer.pending and not final:  # readings the store refused wait in memory:
                # nothing is sealed over them (they would come as late readings, revisions)
                horizon = min(horizon, min(r.ts_ns for r in self.writer.pending) - 1)
            new = await self._db(functools.partial(new_readings, self.store))
            records: list[ActivityRecord] = []
            for meter in self.config.meters:
                try:
                    records += await self._db(
                        functools.partial(self._meter_records, meter, new, horizon, final)
                    )
                except Exception as exc:  # one meter's bad data must not hold up the others
                    check_store_error(exc, self.config.store.path)  # a dead disk ends it
                    self.aggregation_failures += 1
                    log.exception("aggregation of meter %s failed; retried next pass", meter.id)
            if records or new.up_to != new.cursor:
                await self._db(lambda: self._enqueue(records, new.up_to, now))
        if records:
            self.records_created += len(records)
            self.records_revised += sum(1 for r in records if r.revision)
            self.sync.wake()
        return records

    def _meter_records(
        self, meter: MeterConfig, new: NewReadings, horizon: int, final: bool
    ) -> list[ActivityRecord]:
        agg = self.config.aggregation
        periods = MeterPeriods(
            self._sealing,
            self.store,
            meter.meter(),
            meter.points,
            self.calibrations.entries(meter.id),
            int((agg.gap_limit_s or 3 * meter.connection.poll_interval_s) * NS),
        )
        try:
            return periods.records(new, horizon, final)
        finally:
            self.readings_set_aside += periods.set_aside

    def _enqueue(self, records: list[ActivityRecord], up_to: int, now_ns: int) -> None:
        """Records and their outbox batches in one transaction; where the site says so,
        records without a valid calibration go into held batches (stored, not sent)."""
        size = self.config.delivery.batch_size
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
                    compress=self.config.delivery.compression == "gzip",
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
            if (await self.sync.stats()).pending == 0 and (
                self.sync.readings is None or await self._readings_source.all_acked()
            ):
                return True
            self.sync.wake()
            await asyncio.sleep(0.2)
        return False

    async def close(self) -> None:
        self._shared.close()
        if self.mirror is not None:
            self.mirror.close()
        try:
            await self._db(self.store.close)
        except sqlite3.Error as exc:  # e.g. the disk failed: nothing left to save
            log.warning("store not closed cleanly: %s", describe_error(exc))
        self._db_thread.shutdown(wait=True)
