"""Sealing a meter's counter periods into ActivityRecords, and revising sealed ones that late
readings changed (docs/architecture.md, "Sealing into the outbox", "Late readings and
revisions"). Reads the store on the caller's database thread; writes only set-aside marks,
never records: the runtime writes those with their outbox batches in one transaction.

What it needs of the site comes in as values (`SiteSealing`, the meter, its calibrations and
gap limit); it never reaches into the gateway that runs it.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.activity.aggregation import PeriodInput, aggregate, revise
from gateway.activity.counters import CONTEXT
from gateway.activity.factors import FactorSet
from gateway.metrology.status import Entry
from gateway.models import ActivityRecord, Meter, PointKind, PointSpec, Reading
from gateway.periods import Interval, datetime_to_ns, ns_to_datetime
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)
LATE_CURSOR = "aggregation"  # readings up to here were checked for changing sealed periods


@dataclass(frozen=True)
class SiteSealing:
    """What sealing needs of the site: who reports, the period grid and the factors."""

    uscc: str
    gateway_id: str
    interval: Interval
    tz: ZoneInfo
    factors: FactorSet


@dataclass(frozen=True)
class NewReadings:
    """The readings stored since the last pass: the late-readings cursor (None before the
    first pass), the last reading id now, and per point the earliest timestamp among the
    readings stored in between."""

    cursor: int | None
    up_to: int
    earliest: Mapping[tuple[str, str], int]


def new_readings(store: Store) -> NewReadings:
    """What was stored since the cursor LATE_CURSOR (moved by whoever writes the records)."""
    up_to = store.last_reading_id()
    cursor = store.cursor(LATE_CURSOR)
    earliest = store.earliest_new(cursor, up_to) if cursor is not None else {}
    return NewReadings(cursor, up_to, earliest)


class MeterPeriods:
    """Seals and revises the periods of one meter's counters; `set_aside` counts the late
    readings it set aside (their periods' readings were evicted)."""

    def __init__(
        self,
        site: SiteSealing,
        store: Store,
        meter: Meter,
        points: Sequence[PointSpec],
        calibrations: Sequence[Entry],
        gap_limit_ns: int,
    ) -> None:
        self.site, self.store, self.meter, self.points = site, store, meter, points
        self.tz, self.interval = site.tz, site.interval
        self.calibrations = calibrations
        self.gap_limit_ns = gap_limit_ns
        self.set_aside = 0

    def records(self, new: NewReadings, horizon: int, final: bool) -> list[ActivityRecord]:
        """Revisions of the sealed periods the new readings changed, then records of the
        periods complete by `horizon` (`final`: no more readings coming, seal without
        waiting for the readings after a period's end)."""
        records: list[ActivityRecord] = []
        for point in self.points:
            if point.kind is not PointKind.COUNTER:
                continue
            sealed_end = self.store.last_period_end_ns(self.meter.id, point.name)
            late = new.earliest.get((self.meter.id, point.name))
            if sealed_end is not None and late is not None and new.cursor is not None:
                records += self.revise(point, late, sealed_end, new.cursor, new.up_to)
            records += self.seal(point, sealed_end, horizon, final)
        return records

    def record(
        self,
        point: PointSpec,
        start: int,
        end: int,
        interval: Interval | None = None,
        after: Sequence[Reading] | None = None,  # good_from(end, CONTEXT) when already read
    ) -> ActivityRecord:
        m, name = self.meter.id, point.name
        return aggregate(
            PeriodInput(
                uscc=self.site.uscc,
                gateway_id=self.site.gateway_id,
                meter=self.meter,
                point=point,
                interval=interval or self.interval,
                start_ns=start,
                end_ns=end,
                before=self.store.good_before(m, name, start, CONTEXT),
                readings=self.store.readings(m, name, start, end),
                after=after if after is not None else self.store.good_from(m, name, end, CONTEXT),
                gap_limit_ns=self.gap_limit_ns,
                tz=self.tz,
                factors=self.site.factors,
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
            out.append(self.record(point, start, end, after=after))
            start = end
        return out

    def revise(
        self, point: PointSpec, late_ns: int, sealed_end: int, after_id: int, up_to_id: int
    ) -> list[ActivityRecord]:
        """New revisions of the sealed periods that the readings stored in (after_id,
        up_to_id] (the earliest at `late_ns`) changed, recomputed over each period's own span;
        new records for periods before the first one sealed."""
        spans = self._spans(point, late_ns, sealed_end)
        if not spans:
            return []
        m, name = self.meter.id, point.name
        evicted = self.store.evicted_before(m, name)
        opening = self.store.good_before(m, name, spans[0][0], CONTEXT)
        if evicted and (spans[0][0] < evicted or not opening or opening[0].ts_ns < evicted):
            # those periods lost readings to eviction: recomputing them would be wrong, and
            # revising only the later ones would break the sums
            self._set_aside(point, spans[0][0], sealed_end, after_id, up_to_id)
            return []
        out = []
        for start, end, old in spans:
            interval = Interval.parse(old.interval) if old is not None else self.interval
            new = self.record(point, start, end, interval)
            revised = new if old is None else revise(new, old)
            if revised is not None:
                out.append(revised)
        return out

    def _spans(
        self, point: PointSpec, late_ns: int, sealed_end: int
    ) -> list[tuple[int, int, ActivityRecord | None]]:
        """The periods whose window a reading at `late_ns` falls in: sealed ones with their
        record, older ones than any record without; none when it reaches no sealed period."""
        m, name = self.meter.id, point.name
        before = self.store.good_before(m, name, late_ns, CONTEXT)
        if len(before) == CONTEXT and before[0].ts_ns >= sealed_end:
            return []  # CONTEXT readings in between: no sealed period's window reaches it
        times = [*(r.ts_ns for r in before), late_ns]
        if late_ns >= sealed_end and (
            len(times) == 1
            or any(
                b - a > self.gap_limit_ns and b >= sealed_end for a, b in itertools.pairwise(times)
            )
        ):
            return []  # in a run that began after a gap past the sealed periods: theirs ended
        anchor = before[0].ts_ns if before else late_ns
        sealed = self.store.sealed_after(m, name, anchor)
        first = datetime_to_ns(sealed[0].period_start) if sealed else sealed_end
        spans: list[tuple[int, int, ActivityRecord | None]] = []
        start = self.interval.start(anchor, self.tz)
        while start < first:  # periods older than any record (readings older than all)
            end = min(self.interval.end(start, self.tz), first)
            spans.append((start, end, None))
            start = end
        spans += [(datetime_to_ns(r.period_start), datetime_to_ns(r.period_end), r) for r in sealed]
        return spans

    def _set_aside(
        self, point: PointSpec, from_ns: int, sealed_end: int, after_id: int, up_to_id: int
    ) -> None:
        """Keep the late readings in (after_id, up_to_id] as evidence but set them aside, so
        later periods do not use them either, up to where the sealed periods' windows
        reached."""
        m, name = self.meter.id, point.name
        after = self.store.good_from(m, name, sealed_end, CONTEXT, up_to_id=after_id)
        until = (
            after[-1].ts_ns + 1
            if len(after) == CONTEXT
            else max([sealed_end, *(r.ts_ns for r in after)]) + self.gap_limit_ns
        )
        n = self.store.set_aside(m, name, after_id, up_to_id, until, "late-for-evicted-period")
        self.set_aside += n
        log.error(
            "meter %s point %s: %d reading(s) arrived for periods whose readings were"
            " evicted (from %s); kept in the store, not aggregated",
            m,
            name,
            n,
            ns_to_datetime(from_ns, self.tz).isoformat(),
        )
