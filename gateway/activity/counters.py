"""Which counter readings and steps are physically plausible. Pure functions, no I/O.

A counter reading can be wrong without being marked bad: a glitched read (a dip to 0, a spike
to 0xFFFFFFFF, a flipped bit, a float of 1e12). Taken as it comes, one such reading books
energy nobody used: the way down is "backwards" and counts nothing, the way back up counts in
full; a spike counts up, then once more as a rollover. Two rules keep glitches out of the
figures (docs/architecture.md, "Counter glitches"); neither ever adds energy:

1. **Outliers are set aside.** A good reading is kept when every longest chain of its
   neighbourhood (RADIUS good readings either side in its run: readings at most the gap limit
   apart, no meter exchange in between) whose readings can all be one counter's (in order,
   every step forward; for a register that wraps, less than half its range in all) holds it.
   Otherwise it is set aside: kept as evidence, counted as a bad reading, never used. A glitch
   that returns is caught whatever its size (up to two among 2 x RADIUS + 1 readings); a real
   reset is not an outlier, since the readings after it agree with it.
2. **Steps must be possible.** Between the remaining readings, a step counts only when it is
   at most `bound`: the point's `max_rate_per_h` x time, else the meter's rated power x 1.2 x
   time (kWh counters), plus one register step; without either, RATE_FACTOR x the meter's
   own recent rate (the median rate of up to two steps on either side, within the run; a
   step across a gap also from the gaps beside it) x time, and never less than MIN_STEPS
   ticks. A wrap is a rollover only within that bound (near the register's maximum to
   near zero). A step that fails carries no energy: its time is unmeasured (coverage, gap) and
   the period is flagged `implausible-step` or `counter-backwards`. Without rated power and
   without neighbouring steps to take a rate from, a forward step is taken as it is and a
   wrap by less than half the register is a rollover.

Each decision looks only at readings within CONTEXT good readings of a period's ends, so every
period that uses a reading or a step decides the same about it; the gateway seals a period
once CONTEXT readings after its end exist (or the gap limit has passed since the last).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

from gateway.models import ActivityFlag, Meter, MeterReplacement, PointSpec, Reading
from gateway.periods import datetime_to_ns

EXACT = Context(prec=200)  # digits enough that no sum or difference of readings rounds
RADIUS = 4  # a reading's neighbourhood: this many good readings either side
CONTEXT = 10  # good readings either side of a period: what decides its first and last steps
RATED_ALLOWANCE = Decimal("1.2")  # a meter may run 20 % above its rated power
RATE_FACTOR = 100  # without rated power: a step may be this many times the recent rate
MIN_STEPS = 100  # ... and always this many ticks of the counter
FINEST_TICK = Decimal("0.001")  # of the point's unit: 1 Wh, 1 L, 1 kg (our choice, not a standard)
NS_PER_HOUR = Decimal(3600 * 10**9)


@dataclass(frozen=True)
class Step:
    """The counter's advance `d` between two consecutive good readings."""

    a: Reading
    b: Reading
    d: Decimal
    gap: bool  # further apart than the gap limit: `d` lands whole at b
    exchange: bool  # a meter was replaced in between
    flags: frozenset[ActivityFlag]
    unmeasured: bool = False  # backwards or implausible: d = 0, the energy is not known

    def share(self, t: int) -> Decimal:
        """The part of `d` at or before time t."""
        a_ts, b_ts = self.a.ts_ns, self.b.ts_ns
        if t >= b_ts:
            return self.d
        if self.gap or t <= a_ts:
            return Decimal(0)
        with localcontext(EXACT):
            exact = self.d * (t - a_ts) / (b_ts - a_ts)
            exponent = self.d.as_tuple().exponent
            assert isinstance(exponent, int)  # d is finite
            return exact.quantize(Decimal((0, (1,), exponent)), ROUND_HALF_EVEN)

    def touches(self, start_ns: int, end_ns: int) -> bool:
        """Whether the step's time or, for a gap, its landing lies in the period."""
        if self.gap:
            return start_ns < self.b.ts_ns <= end_ns
        return self.a.ts_ns < end_ns and self.b.ts_ns > start_ns


def _value(r: Reading) -> Decimal:
    if r.value is None:  # good readings always carry a value
        raise ValueError("good reading without a value")
    return r.value


def _advance(a: Reading, b: Reading, modulus: Decimal | None) -> Decimal:
    """b - a; for a register that wraps, taken around its range (0 <= advance < modulus)."""
    d = _value(b) - _value(a)
    return d + modulus if modulus is not None and d < 0 else d


def _forward(a: Reading, b: Reading, modulus: Decimal | None) -> bool:
    """A step a counter can take between two readings: not backwards, and for a register
    that wraps, less than half its range (more is indistinguishable from going backwards)."""
    d = _advance(a, b, modulus)
    return d >= 0 and (modulus is None or d < modulus / 2)


def _exchanges(meter: Meter, point: PointSpec) -> list[tuple[int, MeterReplacement]]:
    """The point's meter replacements by time (readings at or after `at` are the new meter's)."""
    return sorted(
        ((datetime_to_ns(x.at), x) for x in meter.replacements if x.point == point.name),
        key=lambda item: item[0],
    )


def _longest(hood: Sequence[Reading], modulus: Decimal | None) -> int:
    """The most readings of `hood` (oldest first) that can all be one counter's: in order,
    every step forward, and for a register that wraps, less than half its range in all
    (more could as well be a step backwards)."""
    best = 0
    for f in range(len(hood)):  # every chain has a first reading: measure the others from it
        chain: list[tuple[Decimal, int]] = []  # (offset from hood[f], longest chain to it)
        for r in hood[f:]:
            d = _advance(hood[f], r, modulus)
            if d < 0 or (modulus is not None and d >= modulus / 2):
                continue
            length = 1 + max((n for o, n in chain if o <= d), default=0)
            chain.append((d, length))
            best = max(best, length)
    return best


def _kept(hood: Sequence[Reading], centre: int, modulus: Decimal | None) -> bool:
    """Whether every longest chain of the neighbourhood holds hood[centre] (rule 1): a reading
    that only some of them hold is as likely a glitch as the one they hold instead."""
    others = [r for i, r in enumerate(hood) if i != centre]
    return _longest(others, modulus) < _longest(hood, modulus)


def outliers(
    window: Sequence[Reading], meter: Meter, point: PointSpec, gap_limit_ns: int
) -> frozenset[int]:
    """Indexes of the readings in `window` (good ones, oldest first) to set aside (rule 1): a
    reading is kept when it belongs to a largest subset of its neighbourhood (up to RADIUS
    readings either side in its run) that can all be one counter's readings; so up to two
    glitched readings among 2 x RADIUS + 1 are set aside, and each decision depends on the
    neighbourhood only, never on where a period or the window starts."""
    modulus = point.counter_modulus()
    exchanges = [at for at, _ in _exchanges(meter, point)]
    runs: list[list[int]] = []
    for i, r in enumerate(window):
        prev = window[i - 1] if i else None
        if (
            prev is None
            or r.ts_ns - prev.ts_ns > gap_limit_ns
            or any(prev.ts_ns < at <= r.ts_ns for at in exchanges)
        ):
            runs.append([])
        runs[-1].append(i)
    out: set[int] = set()
    for run in runs:
        readings = [window[i] for i in run]
        n = len(readings)
        backwards = [
            k
            for k, (a, b) in enumerate(itertools.pairwise(readings))
            if not _forward(a, b, modulus)
        ]
        # a step backwards makes the readings within RADIUS of it suspect; for a register
        # that wraps, so does a neighbourhood advancing half the range or more
        suspect = {
            i for k in backwards for i in range(max(0, k + 1 - RADIUS), min(n, k + RADIUS + 1))
        }
        if modulus is not None:
            through = list(
                itertools.accumulate(
                    (_advance(a, b, modulus) for a, b in itertools.pairwise(readings)),
                    initial=Decimal(0),
                )
            )
            half = modulus / 2
            suspect.update(
                k
                for k in range(n)
                if through[min(n, k + RADIUS + 1) - 1] - through[max(0, k - RADIUS)] >= half
            )
        for k in sorted(suspect):
            lo, hi = max(0, k - RADIUS), min(n, k + RADIUS + 1)
            if not _kept(readings[lo:hi], k - lo, modulus):
                out.add(run[k])
    return frozenset(out)


def _tick(point: PointSpec, value: Decimal) -> Decimal:
    """The smallest advance the counter shows near `value`: the register's resolution there
    (the point's, else the value's last digit), and at least FINEST_TICK (a float register's
    spacing is far finer than any meter counts)."""
    resolution = point.resolution(value)
    if resolution is None or resolution <= 0:
        exponent = value.as_tuple().exponent
        resolution = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return max(resolution, FINEST_TICK)


class _Chain:
    """The readings of a chain with what rule 2 needs to know about its steps."""

    def __init__(
        self, chain: Sequence[Reading], meter: Meter, point: PointSpec, gap_limit_ns: int
    ) -> None:
        self.chain, self.point, self.gap_limit_ns = chain, point, gap_limit_ns
        self.values = [_value(r) for r in chain]
        self.modulus = point.counter_modulus()
        self.replacements = _exchanges(meter, point)
        self.rated_per_ns = (  # the point's own maximum first, else the meter's rated power
            point.max_rate_per_h / NS_PER_HOUR
            if point.max_rate_per_h is not None
            else meter.rated_power_kw * RATED_ALLOWANCE / NS_PER_HOUR
            if meter.rated_power_kw is not None and point.unit == "kWh"
            else None
        )

    def exchanges(self, j: int) -> list[MeterReplacement]:
        a, b = self.chain[j].ts_ns, self.chain[j + 1].ts_ns
        return [x for at, x in self.replacements if a < at <= b]

    def gap(self, j: int) -> bool:
        return self.chain[j + 1].ts_ns - self.chain[j].ts_ns > self.gap_limit_ns

    def rate(self, j: int) -> Decimal | None:
        """Step j's advance per ns when it can be a yardstick for its neighbours: forward, no
        exchange, some time long."""
        dt = self.chain[j + 1].ts_ns - self.chain[j].ts_ns
        if dt <= 0 or self.exchanges(j):
            return None
        a, b = self.chain[j], self.chain[j + 1]
        return _advance(a, b, self.modulus) / dt if _forward(a, b, self.modulus) else None

    def around(self, j: int) -> list[int]:
        """The steps whose rates judge step j: up to two either side. A step within a run
        looks no further than its run (what comes after a gap must not change a period
        sealed before it); a step across a gap takes the runs on both sides, and neighbouring
        gaps (readings far apart all the time)."""
        out = []
        for side in (
            range(j - 1, max(-1, j - 3), -1),
            range(j + 1, min(len(self.chain) - 1, j + 3)),
        ):
            for k in side:
                if self.gap(k) and not self.gap(j):
                    break
                out.append(k)
        return out

    def bound(self, j: int, d: Decimal, wraps: bool) -> Decimal | None:
        """The largest advance step j may make (rule 2); None when nothing tells."""
        dt = self.chain[j + 1].ts_ns - self.chain[j].ts_ns
        tick = _tick(self.point, self.values[j])
        if self.rated_per_ns is not None:
            return self.rated_per_ns * dt + tick
        if not wraps and d <= MIN_STEPS * tick:
            return MIN_STEPS * tick  # within the floor whatever the rate: no need to know it
        with localcontext() as ctx:  # a rate is a yardstick: 28 digits are plenty
            ctx.prec = 28
            rates = [r for r in (self.rate(k) for k in self.around(j)) if r is not None]
            if not rates:
                return None
            return max(RATE_FACTOR * statistics.median(rates) * dt, MIN_STEPS * tick)

    def step(self, j: int) -> Step:
        a, b = self.chain[j], self.chain[j + 1]
        va, vb = self.values[j], self.values[j + 1]
        gap = b.ts_ns - a.ts_ns > self.gap_limit_ns
        exchanges = self.exchanges(j) if self.replacements else []
        flags: set[ActivityFlag] = set()
        if exchanges:
            # each meter's advance in turn: a to the first one's final reading, every new
            # meter from its initial to its final (the next exchange), the last one up to b
            parts = [exchanges[0].old_final - va]
            parts += [nxt.old_final - cur.new_initial for cur, nxt in itertools.pairwise(exchanges)]
            parts.append(vb - exchanges[-1].new_initial)
            flags.add(ActivityFlag.METER_REPLACED)
            if min(parts) < 0:
                flags.add(ActivityFlag.COUNTER_BACKWARDS)
            d = sum((max(x, Decimal(0)) for x in parts), Decimal(0))
        else:
            d = vb - va
            if not d or 0 < d <= FINEST_TICK:  # nothing, or within any bound: the usual case
                return Step(a, b, d, gap, False, frozenset())
        unmeasured = False
        wraps = d < 0 and self.modulus is not None and not exchanges
        if wraps:
            assert self.modulus is not None
            d += self.modulus
        bound = self.bound(j, d, wraps)
        if wraps:
            assert self.modulus is not None
            if d <= bound if bound is not None else d < self.modulus / 2:
                flags.add(ActivityFlag.ROLLOVER)
            else:
                flags.add(ActivityFlag.COUNTER_BACKWARDS)
                d, unmeasured = Decimal(0), True
        elif d < 0:
            flags.add(ActivityFlag.COUNTER_BACKWARDS)
            d, unmeasured = Decimal(0), True
        if d > 0 and bound is not None and d > bound:
            flags.add(ActivityFlag.IMPLAUSIBLE_STEP)
            d, unmeasured = Decimal(0), True
        return Step(a, b, d, gap, bool(exchanges), frozenset(flags), unmeasured)


def steps(
    chain: Sequence[Reading], meter: Meter, point: PointSpec, gap_limit_ns: int
) -> list[Step]:
    """The steps between consecutive readings of `chain` (good, outliers removed, oldest
    first), each with the energy it may count (rule 2)."""
    with localcontext(EXACT):
        judged = _Chain(chain, meter, point, gap_limit_ns)
        return [judged.step(j) for j in range(len(chain) - 1)]
