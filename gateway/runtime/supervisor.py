"""The gateway process: collectors -> store -> aggregation -> outbox -> cloud sync.

`Gateway` wires the parts and supervises their tasks in one asyncio TaskGroup: a collector
per meter (a failing one is logged and restarted, never taking the others down), the store
writer (`writer`), the aggregator (`aggregator`), the platform sync, the status file
(`status`), retention and the optional mirror. A failure a task does not handle stops them
all (GatewayFailed). All SQLite work on the gateway's connection runs on one worker thread.
Domain rules live in the parts, not here.
"""

from __future__ import annotations

import asyncio
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
from gateway.activity.sealing import SiteSealing
from gateway.config import MeterConfig, SiteConfig
from gateway.errors import TanjiFailure
from gateway.metrology.calibration import Registry
from gateway.metrology.status import Entry, status_on
from gateway.models import Reading
from gateway.periods import NS, ns_to_datetime
from gateway.runtime.aggregator import Aggregator
from gateway.runtime.readings import StoreReadings
from gateway.runtime.status import MeterStatus, keep_writing, outbox_snapshot, status_path_for
from gateway.runtime.writer import StoreWriter, describe_error
from gateway.store.mirror import Mirror
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
        if self.factors.skipped_unverified:
            log.warning(
                "factors marked unverified are not used (allow_unverified = false): %s",
                ", ".join(self.factors.skipped_unverified),
            )
        self.outbox: cloud_sync.OutboxStats | None = None  # backlog, read by the status loop
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
        self.aggregator = Aggregator(
            config,
            self.store,
            self.calibrations,
            SiteSealing(
                config.enterprise.uscc, config.gateway_id, agg.period, self._tz, self.factors
            ),
            self.writer,
            self._db,
            clock,
            self.sync.wake,
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

    @property
    def records_created(self) -> int:
        return self.aggregator.records_created

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
                start(self.aggregator.loop(), "aggregator")
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
            **self.aggregator.snapshot(),
            "outbox": outbox_snapshot(self.outbox, self._clock()),
            "link": self.sync.counters.snapshot(),
            "meters": {meter_id: st.snapshot() for meter_id, st in self.meter_status.items()},
        }

    async def _refresh(self) -> None:
        self.outbox = await self.sync.stats()

    async def drain(self, timeout_s: float) -> bool:
        """Stop collecting, seal what is complete and wait for the platform to ack it all.

        Call while `run()` is still running (the sync must be up); True when nothing is left
        pending in the outbox (nor in the raw readings stream, when it is on).
        """
        for task in self._collector_tasks:
            task.cancel()
        await asyncio.gather(*self._collector_tasks, return_exceptions=True)
        await self.aggregator.due(final=True)
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
