"""The aggregation pass: every few seconds, the periods that are due are sealed (and the sealed
ones that late readings changed are revised: gateway/activity/sealing.py), and the records are
written with their outbox batches and the late-readings cursor in one transaction, so a crash
loses nothing and a restart misses nothing. A failed pass is counted and tried again; only a
store that cannot be written (StoreFailed) ends the gateway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

import cloud_sync
from gateway.activity.sealing import (
    LATE_CURSOR,
    MeterPeriods,
    NewReadings,
    SiteSealing,
    new_readings,
)
from gateway.config import MeterConfig, SiteConfig
from gateway.metrology.calibration import Registry
from gateway.models import ActivityRecord
from gateway.periods import NS
from gateway.runtime.writer import (
    Reminder,
    StoreFailed,
    StoreWriter,
    check_store_error,
    describe_error,
)
from gateway.store.diskspace import is_disk_full
from gateway.store.schema import RunInDb, transaction
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)


class Aggregator:
    """Seals `config`'s meters' periods from `store` into records and the outbox; the store's
    work runs through `db` (the gateway's database thread), after `writer` has committed
    what was collected; `wake` tells the sync that there is something to send."""

    def __init__(
        self,
        config: SiteConfig,
        store: Store,
        calibrations: Registry,
        sealing: SiteSealing,
        writer: StoreWriter,
        db: RunInDb,
        clock: Callable[[], int],
        wake: Callable[[], None],
    ) -> None:
        self.config, self.store, self.calibrations = config, store, calibrations
        self._sealing, self._writer, self._db = sealing, writer, db
        self._clock, self._wake = clock, wake
        self.records_created = 0
        self.records_revised = 0
        self.readings_set_aside = 0  # late readings for evicted periods (kept, not used)
        self.failures = 0
        # without a valid calibration, held back by the site's choice (also from earlier runs)
        self.records_held = cloud_sync.Outbox(store.conn).stats().records_held
        self._trouble = Reminder()
        self._passing = asyncio.Lock()  # the loop's pass and drain's never interleave

    def snapshot(self) -> dict[str, int]:
        """Aggregation's part of the gateway's status."""
        return {
            "records_created": self.records_created,
            "records_revised": self.records_revised,
            "readings_set_aside": self.readings_set_aside,
            "aggregation_failures": self.failures,
            "records_held": self.records_held,
        }

    async def loop(self) -> None:
        period = self.config.aggregation.period.seconds or 900
        while True:
            await asyncio.sleep(min(5.0, max(0.5, period / 4)))
            try:
                await self.due()
            except StoreFailed:  # met committing the readings first: ends the gateway
                raise
            except Exception as exc:  # e.g. the disk is full: the readings are safe, try again
                check_store_error(exc, self.config.store.path)  # a dead disk ends the gateway
                self.failures += 1
                if is_disk_full(exc, self.config.store.path):
                    self._trouble.note(
                        logging.WARNING,
                        "aggregation cannot write its records: %s; tried again every pass",
                        describe_error(exc),
                    )
                else:
                    log.exception("aggregation pass failed; trying again in the next pass")
            else:
                self._trouble.clear("aggregation writes its records again")

    async def due(self, final: bool = False) -> list[ActivityRecord]:
        """Seal every period that ended more than `grace_s` ago into records and the outbox,
        and revise sealed ones that late readings changed. A period is sealed once CONTEXT
        good readings after its end exist (they decide whether the readings around its end
        are glitches: gateway/activity/counters.py) or the gap limit has passed since the last of
        them; `final` (no more readings coming: collection stopped) seals without.

        Records are computed one meter at a time on the database thread, so the store writer
        gets its turn in between (sealing a 15-minute period of 1000 meters takes seconds:
        bench/aggregate_pass.py), then written with their outbox batches in one transaction.
        A crash before that loses nothing: the next pass computes the same records again."""
        async with self._passing:
            await self._writer.flush()
            now = self._clock()
            horizon = now - int(self.config.aggregation.grace_s * NS)
            pending = self._writer.pending
            if pending and not final:  # readings the store refused wait in memory:
                # nothing is sealed over them (they would come as late readings, revisions)
                horizon = min(horizon, min(r.ts_ns for r in pending) - 1)
            new = await self._db(functools.partial(new_readings, self.store))
            records: list[ActivityRecord] = []
            for meter in self.config.meters:
                try:
                    records += await self._db(
                        functools.partial(self._meter_records, meter, new, horizon, final)
                    )
                except Exception as exc:  # one meter's bad data must not hold up the others
                    check_store_error(exc, self.config.store.path)  # a dead disk ends it
                    self.failures += 1
                    log.exception("aggregation of meter %s failed; retried next pass", meter.id)
            if records or new.up_to != new.cursor:
                await self._db(lambda: self._enqueue(records, new.up_to, now))
        if records:
            self.records_created += len(records)
            self.records_revised += sum(1 for r in records if r.revision)
            self._wake()
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
