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
   at most `bound`: the meter's rated power x 1.2 x time plus one register step when rated
   power is configured (kWh counters); otherwise RATE_FACTOR x the meter's own recent rate
   (the median rate of up to two ordinary steps on either side) x time, and never less than
   MIN_STEPS ticks. A wrap is a rollover only within that bound (near the register's maximum to
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
        forward = [_forward(a, b, modulus) for a, b in itertools.pairwise(readings)]
        # a wrapping register's advance from the run's first reading to each, step by step
        through = (
            list(
                itertools.accumulate(
                    (_advance(a, b, modulus) for a, b in itertools.pairwise(readings)),
                    initial=Decimal(0),
                )
            )
            if modulus is not None
            else []
        )
        for k, i in enumerate(run):
            lo, hi = max(0, k - RADIUS), min(len(run), k + RADIUS + 1)
            if all(forward[lo : hi - 1]) and (
                modulus is None or through[hi - 1] - through[lo] < modulus / 2
            ):
                continue  # the usual case: nothing odd around it
            if not _kept(readings[lo:hi], k - lo, modulus):
                out.add(i)
    return frozenset(out)


@dataclass(frozen=True)
class _Raw:
    """A step before the plausibility check: what the readings say."""

    d: Decimal  # the advance (negative: backwards; for a wrapping register, around it)
    wraps: bool  # a wrapping register's value went down: a rollover if plausible
    exchange: bool
    flags: frozenset[ActivityFlag]
    rate: Decimal | None  # per ns, for an ordinary step (a rate reference for neighbours)


def _raw_step(
    a: Reading,
    b: Reading,
    exchanges: Sequence[MeterReplacement],
    modulus: Decimal | None,
    gap_limit_ns: int,
) -> _Raw:
    va, vb = _value(a), _value(b)
    dt = b.ts_ns - a.ts_ns
    if exchanges:
        # each meter's advance in turn: a to the first one's final reading, every new meter
        # from its initial to its final (the next exchange), the last one up to b
        parts = [exchanges[0].old_final - va]
        parts += [nxt.old_final - cur.new_initial for cur, nxt in itertools.pairwise(exchanges)]
        parts.append(vb - exchanges[-1].new_initial)
        flags = {ActivityFlag.METER_REPLACED}
        if min(parts) < 0:
            flags.add(ActivityFlag.COUNTER_BACKWARDS)
        d = sum((max(x, Decimal(0)) for x in parts), Decimal(0))
        return _Raw(d, False, True, frozenset(flags), None)
    d = vb - va
    wraps = d < 0 and modulus is not None
    if wraps:
        assert modulus is not None
        d += modulus
    ordinary = dt > 0 and dt <= gap_limit_ns and d >= 0 and (not wraps or _forward(a, b, modulus))
    return _Raw(d, wraps, False, frozenset(), d / dt if ordinary else None)


def _tick(point: PointSpec, value: Decimal) -> Decimal:
    """The smallest advance the counter shows near `value`: the register's resolution there
    (the point's, else the value's last digit), and at least FINEST_TICK (a float register's
    spacing is far finer than any meter counts)."""
    resolution = point.resolution(value)
    if resolution is None or resolution <= 0:
        exponent = value.as_tuple().exponent
        resolution = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    return max(resolution, FINEST_TICK)


def _bound(
    j: int, raws: Sequence[_Raw], chain: Sequence[Reading], meter: Meter, point: PointSpec
) -> Decimal | None:
    """The largest advance step j may make (rule 2); None when nothing tells."""
    a, b = chain[j], chain[j + 1]
    dt = b.ts_ns - a.ts_ns
    resolution = _tick(point, _value(a))
    if meter.rated_power_kw is not None and point.unit == "kWh":
        return meter.rated_power_kw * RATED_ALLOWANCE * dt / NS_PER_HOUR + resolution
    rates = [r.rate for r in (*raws[max(0, j - 2) : j], *raws[j + 1 : j + 3]) if r.rate is not None]
    if not rates:
        return None
    return max(RATE_FACTOR * statistics.median(rates) * dt, MIN_STEPS * resolution)


def steps(
    chain: Sequence[Reading], meter: Meter, point: PointSpec, gap_limit_ns: int
) -> list[Step]:
    """The steps between consecutive readings of `chain` (good, outliers removed, oldest
    first), each with the energy it may count (rule 2)."""
    modulus = point.counter_modulus()
    replacements = _exchanges(meter, point)
    with localcontext(EXACT):
        raws = [
            _raw_step(
                a,
                b,
                [x for at, x in replacements if a.ts_ns < at <= b.ts_ns],
                modulus,
                gap_limit_ns,
            )
            for a, b in itertools.pairwise(chain)
        ]
        out = []
        for j, raw in enumerate(raws):
            a, b = chain[j], chain[j + 1]
            bound = _bound(j, raws, chain, meter, point)
            flags = set(raw.flags)
            d, unmeasured = raw.d, False
            if raw.wraps:
                assert modulus is not None
                if d <= bound if bound is not None else d < modulus / 2:
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
            gap = b.ts_ns - a.ts_ns > gap_limit_ns
            out.append(Step(a, b, d, gap, raw.exchange, frozenset(flags), unmeasured))
    return out
