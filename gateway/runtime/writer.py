"""The store writer: collected readings wait in memory for at most one commit interval, then
are committed in durable transactions under the disk cap; retention and the cap evict what the
platform has settled. When the store cannot take readings for a cause that passes (disk full,
the cap with nothing to evict, the database held by another process) it refuses: readings
wait in memory up to PENDING_LIMIT, the cause is logged once and shown in the status, and
writing resumes by itself. Any other store error is StoreFailed, which ends the gateway: it
never lives on doing nothing, and never drops a reading without counting it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cloud_sync
from gateway.activity.counters import CONTEXT
from gateway.config import StoreConfig
from gateway.errors import TanjiFailure
from gateway.models import Reading
from gateway.periods import NS
from gateway.runtime.readings import unsent_from_id
from gateway.store.diskspace import (
    Reserve,
    describe_free,
    free_bytes,
    is_disk_full,
    reserve_path_for,
)
from gateway.store.eviction import EvictionResult, Keep
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
RETENTION_INTERVAL_S = 60.0
PENDING_LIMIT = 50_000  # readings held in memory while the store refuses (~30 MB), then dropped
WRITE_CHUNK = 5_000  # readings per transaction when catching up
REMIND_S = 60.0  # a condition that lasts is logged when it starts, then this often
# what eviction leaves: a counter's readings that open its next period, unsettled batches
KEEP = Keep(counter_readings=CONTEXT, settled_batches=cloud_sync.SETTLED_BATCHES)
CAP_RETRY_S = 15.0  # at the disk cap with nothing to evict: how often eviction is tried again
BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")  # another process holds the database: it passes


def describe_error(exc: BaseException) -> str:
    """An exception as one line: SQLite's error name where there is one."""
    if isinstance(exc, StoreFailed):
        return str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else f"{type(exc).__name__}: {text}"


class StoreFailed(TanjiFailure):
    """The store cannot be written for a cause that does not pass (an I/O error, a read-only
    or damaged file): whichever task meets it stops the gateway."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"the store cannot be written: {describe_error(cause)}")


def check_store_error(exc: Exception, store_path: Path) -> None:
    """Raise StoreFailed for a database error that does not pass by itself (an I/O error,
    a read-only or damaged file); disk full, busy and anything not the database's pass."""
    if (
        isinstance(exc, sqlite3.Error)
        and not is_disk_full(exc, store_path)
        and getattr(exc, "sqlite_errorname", "") not in BUSY
    ):
        raise StoreFailed(exc) from exc


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


class StoreWriter:
    """Commits submitted readings to `store` on the gateway's database thread (`db_thread`,
    shared with everything else that uses the store's connection) and evicts what retention
    and the disk cap allow. `sealed_before(now)` is where the periods not sealed yet begin
    (their readings stay); `streaming`: the raw readings stream is on (readings it has not
    delivered stay)."""

    def __init__(
        self,
        config: StoreConfig,
        store: Store,
        db_thread: ThreadPoolExecutor,
        clock: Callable[[], int],
        sealed_before: Callable[[int], int],
        streaming: bool,
    ) -> None:
        self.config, self.store = config, store
        self._db_thread, self._clock = db_thread, clock
        self._sealed_before, self._streaming = sealed_before, streaming
        self.pending: list[Reading] = []  # collected, not committed yet
        self.readings_stored = 0
        self.readings_refused = 0  # dropped: more than PENDING_LIMIT while the store refused
        self.disk = EvictionResult(0, 0, over_cap=False)
        self.refusal: Refusal | None = None  # why the store takes no new readings now
        self.reserve = Reserve(reserve_path_for(config.path))
        self._flushing = asyncio.Lock()  # one flush at a time takes readings off pending
        self._cap_full_at = -CAP_RETRY_S  # time.monotonic(): the cap had nothing to evict
        self._retention_trouble = Reminder()
        self._dropping = Reminder()

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn)

    def submit(self, readings: list[Reading]) -> None:
        """Take readings for the store (committed within `commit_interval_s`)."""
        self.pending.extend(readings)

    def take_reserve(self) -> None:
        """Keep the reserve file that a full disk gives back (for status, acks, records)."""
        if not self.reserve.take():
            log.warning(
                "no room for the %.0f MB reserve %s (kept for a full disk)",
                self.reserve.size / 1e6,
                self.reserve.path,
            )

    def snapshot(self) -> dict[str, Any]:
        """The store's part of the gateway's status."""
        free = free_bytes(self.config.path)
        return {
            "readings_stored": self.readings_stored,
            "readings_refused": self.readings_refused,
            "readings_pending": len(self.pending),
            "store_refusing": self.refusal.cause if self.refusal else None,
            "store_refusing_since_ns": str(self.refusal.since_ns) if self.refusal else None,
            "store_used_mb": round(self.disk.used_bytes / 1e6, 1),
            "store_over_cap": self.disk.over_cap,
            "disk_free_mb": None if free is None else round(free / 1e6, 1),
        }

    async def write_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval_s)
            await self.flush()

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
            while self.pending:
                if self.refusal is not None and not self._may_retry():
                    break
                batch = self.pending[:WRITE_CHUNK]
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
                        f" max_disk_mb = {self.config.max_disk_mb:g}, nothing the platform"
                        " has acknowledged is left to evict",
                    )
                    break
                written += len(batch)
                self._resumed()
            self._bound_pending()
            if len(self.pending) < PENDING_LIMIT:
                self._dropping.clear("readings are kept in memory again (room below the limit)")
            if self.refusal is not None:
                self._remind()
            return written

    async def last_flush(self) -> None:
        """Commit what is pending on the way out; say what could not be."""
        try:
            await self.flush()
        except Exception as exc:
            log.error(
                "%d collected readings not stored on the way out: %s",
                len(self.pending),
                describe_error(exc),
            )
            return
        if self.pending:
            log.error(
                "%d collected readings not stored on the way out: the store refuses them (%s)",
                len(self.pending),
                self.refusal.cause if self.refusal else "unknown",
            )

    async def _commit(self, batch: list[Reading]) -> bool:
        """Commit `batch` (the head of pending) if it fits under the cap; False if not.
        Cancelled meanwhile, it waits for the database thread's outcome, so a committed
        batch is neither forgotten nor written twice."""
        cap = int(self.config.max_disk_mb * 1e6)
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
        del self.pending[: len(batch)]
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
            margin = self.store.room_needed(self.pending[:WRITE_CHUNK]) + (1 << 20)
            return self.reserve.take(margin)  # room for the reserve and more: try
        if self.refusal.kind == "cap":
            return time.monotonic() - self._cap_full_at >= CAP_RETRY_S
        return True

    def _refuse_for(self, exc: Exception) -> None:
        """Refuse new readings for a cause that passes (disk full, database busy); any other
        error raises StoreFailed."""
        path = self.config.path
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
                len(self.pending),
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
        extra = len(self.pending) - PENDING_LIMIT
        if extra <= 0:
            return
        self._dropping.note(
            logging.ERROR,
            "%d readings wait in memory for the store: newer ones are dropped (counted as"
            " readings_refused) until it writes again",
            PENDING_LIMIT,
        )
        del self.pending[PENDING_LIMIT:]
        self.readings_refused += extra

    async def retention_loop(self) -> None:
        while True:
            try:
                await self.enforce_limits()
            except Exception as exc:  # e.g. the disk is full or the file locked: try again
                check_store_error(exc, self.config.path)  # a dead disk ends the gateway
                if is_disk_full(exc, self.config.path):
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
        cfg = self.config
        now = self._clock()
        sealed = self._sealed_before(now)
        streaming = self._streaming
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
