"""The gateway process: collectors -> store -> aggregation -> outbox -> cloud sync.

One asyncio TaskGroup supervises a collector task per meter (a failing one is logged and
restarted, never taking the others down), the batched store writer, the aggregator and the
MQTT sync. All SQLite work on the gateway's connection runs on one worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import cloud_sync
from collectors import CollectorStats, Shared, create_collector
from gateway.activity.counters import CONTEXT
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
from gateway.runtime.readings import StoreReadings, unsent_from_id
from gateway.store.diskspace import (
    Reserve,
    describe_free,
    free_bytes,
    is_disk_full,
    reserve_path_for,
)
from gateway.store.eviction import EvictionResult, Keep
from gateway.store.mirror import Mirror
from gateway.store.schema import transaction
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
STATUS_INTERVAL_S = 5.0
RETENTION_INTERVAL_S = 60.0
PENDING_LIMIT = 50_000  # readings held in memory while the store refuses (~30 MB), then dropped
WRITE_CHUNK = 5_000  # readings per transaction when catching up
REMIND_S = 60.0  # a condition that lasts is logged when it starts, then this often
# what eviction leaves: a counter's readings that open its next period, unsettled batches
KEEP = Keep(counter_readings=CONTEXT, settled_batches=cloud_sync.SETTLED_BATCHES)
CAP_RETRY_S = 15.0  # at the disk cap with nothing to evict: how often eviction is tried again


def status_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".status.json")


def describe_error(exc: BaseException) -> str:
    """An exception as one line: SQLite's error name where there is one."""
    if isinstance(exc, StoreFailed):
        return str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else f"{type(exc).__name__}: {text}"


class GatewayFailed(TanjiFailure):
    """A background task failed in a way the gateway does not handle: the process must end
    with a non-zero exit code so that the service manager restarts it."""

    def __init__(self, task: str, cause: BaseException) -> None:
        super().__init__(f"task {task} failed: {describe_error(cause)}")
        self.task = task
        self.cause = cause


BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")  # another process holds the database: it passes


class StoreFailed(TanjiFailure):
    """The store cannot be written for a cause that does not pass (an I/O error, a read-only
    or damaged file): whichever task meets it stops the gateway."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"the store cannot be written: {describe_error(cause)}")


@dataclass
class Refusal:
    """Why the store takes no new readings now (shown in status, logged)."""

    kind: str  # "disk-full" | "cap" | "busy"
    cause: str
    since_ns: int
    since: float  # time.monotonic()
    reminded: float
    refused_before: int  # readings_refused when it started


RESUMES_WHEN = {
    "disk-full": "space is free again",
    "cap": "the platform acknowledges records (their readings can then be evicted)",
    "busy": "the other process lets go of the database",
}


class Reminder:
    """Logs a condition when it starts, then at most every `every_s` while it lasts, and once
    when it ends: never a line per second."""

    def __init__(self, every_s: float = REMIND_S) -> None:
        self.every_s = every_s
        self._since: float | None = None
        self._last = 0.0

    def note(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if self._since is None or now - self._last >= self.every_s:
            lasting = "" if self._since is None else f" (for {now - self._since:.0f} s)"
            log.log(level, msg + lasting, *args)
            self._last = now
            self._since = self._since if self._since is not None else now

    def clear(self, msg: str, *args: object) -> None:
        if self._since is not None:
            log.warning(msg, *args)
            self._since = None


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
        self._readings_source = StoreReadings(self.store, self._db)  # raw readings stream
        self.sync = cloud_sync.CloudSync(
            config.store.path,
            cloud_sync.Topics(config.mqtt.topic_prefix, config.enterprise.uscc, config.gateway_id),
            config.mqtt,
            config.mqtt.client_id or f"tanji-{config.gateway_id}",
            clock=clock,
            readings=self._readings_source,
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
        self.readings_stored = 0
        self.readings_refused = 0  # dropped: more than PENDING_LIMIT while the store refused
        self.disk = EvictionResult(0, 0, over_cap=False)
        self.records_created = 0
        self.records_revised = 0
        self.readings_set_aside = 0  # late readings for evicted periods (kept, not used)
        self.aggregation_failures = 0
        self.outbox: cloud_sync.OutboxStats | None = None  # backlog, read by the status loop
        # without a valid calibration, held back by the site's choice (also from earlier runs)
        self.records_held = cloud_sync.Outbox(self.store.conn).stats().records_held
        self._pending: list[Reading] = []
        self._flushing = asyncio.Lock()  # one flush at a time takes readings off _pending
        self.refusal: Refusal | None = None  # why the store takes no new readings now
        self._cap_full_at = -CAP_RETRY_S  # time.monotonic(): the cap had nothing to evict
        self.reserve = Reserve(reserve_path_for(config.store.path))
        self._status_trouble = Reminder()
        self._aggregation_trouble = Reminder()
        self._retention_trouble = Reminder()
        self._dropping = Reminder()
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
        """Collect, store, aggregate and sync until cancelled; flushes readings on the way out.

        Each task handles the failures it can (a collector restarts, a full disk makes the
        store refuse readings until space returns, the sync reconnects); any other failure
        (StoreFailed among them) stops every task and raises GatewayFailed naming the task
        and the cause, so the process can exit non-zero and be restarted, never live on
        doing nothing."""
        if not self.reserve.take():
            log.warning(
                "no room for the %.0f MB reserve %s (kept for a full disk)",
                self.reserve.size / 1e6,
                self.reserve.path,
            )
        try:
            async with asyncio.TaskGroup() as tg:

                def start(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
                    return tg.create_task(self._supervised(name, coro), name=name)

                self._collector_tasks = [
                    start(self._collect(meter), f"collect-{meter.id}")
                    for meter in self.config.meters
                ]
                start(self._write_loop(), "store-writer")
                start(self._aggregate_loop(), "aggregator")
                start(self.sync.run(), "cloud-sync")
                start(self._status_loop(), "status-file")
                start(self._retention_loop(), "retention")
                if self.mirror is not None:
                    start(self.mirror.run(), "influxdb-mirror")
        except BaseExceptionGroup as group:
            failed = [e for e in group.exceptions if isinstance(e, GatewayFailed)]
            if not failed or len(failed) < len(group.exceptions):
                raise  # not a task's failure: a bug here, shown as it is
            raise failed[0] from None
        finally:
            await asyncio.shield(self._last_flush())

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

    async def _last_flush(self) -> None:
        """Commit what is pending on the way out; say what could not be."""
        try:
            await self.flush()
        except Exception as exc:
            log.error(
                "%d collected readings not stored on the way out: %s",
                len(self._pending),
                describe_error(exc),
            )
            return
        if self._pending:
            log.error(
                "%d collected readings not stored on the way out: the store refuses them (%s)",
                len(self._pending),
                self.refusal.cause if self.refusal else "unknown",
            )

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
        free = free_bytes(self.config.store.path)
        return {
            "schema": "tanji.gateway-status/1",
            "gateway_id": self.config.gateway_id,
            "written_ns": str(self._clock()),
            "readings_stored": self.readings_stored,
            "readings_refused": self.readings_refused,
            "readings_pending": len(self._pending),
            "store_refusing": self.refusal.cause if self.refusal else None,
            "store_refusing_since_ns": str(self.refusal.since_ns) if self.refusal else None,
            "store_used_mb": round(self.disk.used_bytes / 1e6, 1),
            "store_over_cap": self.disk.over_cap,
            "disk_free_mb": None if free is None else round(free / 1e6, 1),
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
        """Replace the status file atomically (readers never see half a file). On a full
        disk, where even the new file finds no room, the old file is overwritten in place
        (padded with blanks: JSON allows them), so the status still names the cause."""
        path = self.status_path
        tmp = path.with_suffix(".tmp")
        data = json.dumps(self.status_snapshot(), indent=1).encode()
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not is_disk_full(exc, path):
                raise
            with path.open("r+b") as f:  # FileNotFoundError: no old file to reuse
                size = os.fstat(f.fileno()).st_size
                f.write(data + b" " * (size - len(data)))

    async def _status_loop(self) -> None:
        while True:
            try:
                self.outbox = await self.sync.stats()
            except Exception:  # e.g. the database is locked: the last figures stay
                log.debug("outbox statistics not read this time", exc_info=True)
            try:
                self.write_status()
            except OSError as exc:
                self._status_trouble.note(
                    logging.WARNING, "cannot write %s: %s", self.status_path, exc
                )
            else:
                self._status_trouble.clear("status file %s written again", self.status_path)
            await asyncio.sleep(STATUS_INTERVAL_S)

    # --- store -------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Commit the readings collected so far (durable transactions of up to WRITE_CHUNK),
        checking the disk cap before each; returns how many were committed.

        At the cap, readings the platform has settled are evicted first; with nothing left to
        evict, or with the disk full (or the database held by another process), the store
        refuses: readings wait in memory (up to PENDING_LIMIT, newer ones are then dropped
        and counted as `readings_refused`), the cause is logged once and shown in the status,
        and writing resumes by itself once the cause is gone. Any other error raises
        StoreFailed."""
        async with self._flushing:
            written = 0
            while self._pending:
                if self.refusal is not None and not self._may_retry():
                    break
                batch = self._pending[:WRITE_CHUNK]
                try:
                    fits = await self._commit(batch)
                    if not fits:
                        fits = await self._make_room(batch) and await self._commit(batch)
                except Exception as exc:
                    self._refuse_for(exc)  # or raises it
                    break
                if not fits:
                    self._refuse(
                        "cap",
                        f"disk cap reached: {self.disk.used_bytes / 1e6:.1f} MB used of"
                        f" max_disk_mb = {self.config.store.max_disk_mb:g}, nothing the platform"
                        " has acknowledged is left to evict",
                    )
                    break
                written += len(batch)
                self._resumed()
            self._bound_pending()
            if len(self._pending) < PENDING_LIMIT:
                self._dropping.clear("readings are kept in memory again (room below the limit)")
            if self.refusal is not None:
                self._remind()
            return written

    async def _commit(self, batch: list[Reading]) -> bool:
        """Commit `batch` (the head of _pending) if it fits under the cap; False if not.
        Cancelled meanwhile, it waits for the database thread's outcome, so a committed
        batch is neither forgotten nor written twice."""
        cap = int(self.config.store.max_disk_mb * 1e6)
        fut = asyncio.get_running_loop().run_in_executor(
            self._db_thread, lambda: self.store.append_within(batch, cap)
        )
        try:
            fits = await asyncio.shield(fut)
        except asyncio.CancelledError:
            await asyncio.wait({fut})
            if not fut.cancelled() and fut.exception() is None and fut.result():
                self._stored(batch)
            raise
        if fits:
            self._stored(batch)
        return fits

    def _stored(self, batch: list[Reading]) -> None:
        del self._pending[: len(batch)]
        self.readings_stored += len(batch)

    async def _make_room(self, batch: list[Reading]) -> bool:
        """Evict for the cap now (after an eviction that left nothing to evict, not again
        for CAP_RETRY_S); True when the batch then fits."""
        if time.monotonic() - self._cap_full_at < CAP_RETRY_S:
            return False
        if (await self.enforce_limits(self.store.room_needed(batch))).over_cap:
            self._cap_full_at = time.monotonic()
            return False
        return True

    def _may_retry(self) -> bool:
        """While refusing: whether to try writing again now."""
        assert self.refusal is not None
        if self.refusal.kind == "disk-full":
            margin = self.store.room_needed(self._pending[:WRITE_CHUNK]) + (1 << 20)
            return self.reserve.take(margin)  # room for the reserve and more: try
        if self.refusal.kind == "cap":
            return time.monotonic() - self._cap_full_at >= CAP_RETRY_S
        return True

    def _check_store_error(self, exc: Exception) -> None:
        """Raise StoreFailed for a database error that does not pass by itself (an I/O error,
        a read-only or damaged file); disk full, busy and anything not the database's pass."""
        if (
            isinstance(exc, sqlite3.Error)
            and not is_disk_full(exc, self.config.store.path)
            and getattr(exc, "sqlite_errorname", "") not in BUSY
        ):
            raise StoreFailed(exc) from exc

    def _refuse_for(self, exc: Exception) -> None:
        """Refuse new readings for a cause that passes (disk full, database busy); any other
        error raises StoreFailed."""
        path = self.config.store.path
        if is_disk_full(exc, path):
            self._refuse("disk-full", f"disk full: {path.parent}: {exc} ({describe_free(path)})")
        elif getattr(exc, "sqlite_errorname", "") in BUSY:
            self._refuse("busy", f"store busy: {exc} (another process holds it)")
        else:
            raise StoreFailed(exc) from exc

    def _refuse(self, kind: str, cause: str) -> None:
        released = kind == "disk-full" and self.reserve.release()
        if self.refusal is not None and self.refusal.kind == kind:
            self.refusal.cause = cause
            return
        now = time.monotonic()
        self.refusal = Refusal(kind, cause, self._clock(), now, now, self.readings_refused)
        log.error(
            "store refuses new readings: %s; they wait in memory meanwhile (up to %d, newer"
            " ones are then dropped and counted); writing resumes by itself when %s",
            cause,
            PENDING_LIMIT,
            RESUMES_WHEN[kind],
        )
        if released:
            log.warning(
                "released the %.0f MB reserve %s: room for the status file, acks and records",
                self.reserve.size / 1e6,
                self.reserve.path,
            )

    def _remind(self) -> None:
        refusal = self.refusal
        assert refusal is not None
        now = time.monotonic()
        if now - refusal.reminded >= REMIND_S:
            refusal.reminded = now
            log.warning(
                "store still refuses new readings after %.0f s: %s; %d in memory, %d dropped",
                now - refusal.since,
                refusal.cause,
                len(self._pending),
                self.readings_refused - refusal.refused_before,
            )

    def _resumed(self) -> None:
        refusal, self.refusal = self.refusal, None
        if refusal is not None:
            log.warning(
                "store writing new readings again after %.0f s (%s); %d readings dropped meanwhile",
                time.monotonic() - refusal.since,
                refusal.cause,
                self.readings_refused - refusal.refused_before,
            )

    def _bound_pending(self) -> None:
        """Readings beyond PENDING_LIMIT are dropped, newest first, and counted."""
        extra = len(self._pending) - PENDING_LIMIT
        if extra <= 0:
            return
        self._dropping.note(
            logging.ERROR,
            "%d readings wait in memory for the store: newer ones are dropped (counted as"
            " readings_refused) until it writes again",
            PENDING_LIMIT,
        )
        del self._pending[PENDING_LIMIT:]
        self.readings_refused += extra

    async def _write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.store.commit_interval_s)
            await self.flush()

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_limits()
            except Exception as exc:  # e.g. the disk is full or the file locked: try again
                self._check_store_error(exc)  # a dead disk ends the gateway
                if is_disk_full(exc, self.config.store.path):
                    self._retention_trouble.note(
                        logging.WARNING,
                        "store: retention and disk cap not enforced: %s; tried every %.0f s",
                        describe_error(exc),
                        RETENTION_INTERVAL_S,
                    )
                else:
                    log.exception("store: retention and disk cap not enforced this time")
            else:
                self._retention_trouble.clear("store: retention and disk cap enforced again")
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def enforce_limits(self, room_bytes: int = 0) -> EvictionResult:
        """Evict what retention and the disk cap allow (gateway.store.sqlite.Store.enforce_limits),
        making `room_bytes` more room under the cap where it can."""
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
                keep=KEEP,
                unsent_from_id=unsent_from_id(self.store) if streaming else None,
                room_bytes=room_bytes,
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
            except StoreFailed:  # met committing the readings first: ends the gateway
                raise
            except Exception as exc:  # e.g. the disk is full: the readings are safe, try again
                self._check_store_error(exc)  # a dead disk ends the gateway
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
            await self.flush()
            now = self._clock()
            horizon = now - int(self.config.aggregation.grace_s * NS)
            if self._pending and not final:  # readings the store refused wait in memory:
                # nothing is sealed over them (they would come as late readings, revisions)
                horizon = min(horizon, min(r.ts_ns for r in self._pending) - 1)
            new = await self._db(functools.partial(new_readings, self.store))
            records: list[ActivityRecord] = []
            for meter in self.config.meters:
                try:
                    records += await self._db(
                        functools.partial(self._meter_records, meter, new, horizon, final)
                    )
                except Exception as exc:  # one meter's bad data must not hold up the others
                    self._check_store_error(exc)  # but a dead disk ends the gateway
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
