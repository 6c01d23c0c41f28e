"""Activity records -> energy per production line and per product. Pure functions, no I/O.

Rule (docs/architecture.md, "Allocation"): per period and line, each carrier's energy is the
sum of the line's share (`allocation` fraction) of every consumed-energy record; the line's
output is the sum of its production counters' records, per product. A line that made several
products in a period splits that period's energy in proportion to their output, in whole
thousandths of the energy's resolution given out by largest remainder, so the products'
energy always sums exactly to the line's and no share is negative. Energy of a period in
which the line made nothing stays with the line as `idle`, never silently spread onto
products.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Context, Decimal, localcontext

from gateway.activity.aggregation import CONSUMED
from gateway.models import ActivityRecord, Quantity

Energy = dict[tuple[str, str], Decimal]  # (carrier, unit) -> quantity
EXACT = Context(prec=200)  # far more digits than any register and fraction multiply to


def _add(into: Energy, key: tuple[str, str], value: Decimal) -> None:
    into[key] = into.get(key, Decimal(0)) + value


@dataclass
class ProductTotal:
    """One product of one line over the report's span."""

    line: str
    product: str
    output: Decimal = Decimal(0)
    energy: Energy = field(default_factory=dict)
    by_day: dict[date, tuple[Decimal, Energy]] = field(default_factory=dict)  # output, energy

    def per_unit(self, key: tuple[str, str]) -> Decimal | None:
        return self.energy.get(key, Decimal(0)) / self.output if self.output else None


@dataclass
class LineTotal:
    """One line over the report's span: its energy, the part with no output, its output."""

    line: str
    energy: Energy = field(default_factory=dict)
    idle: Energy = field(default_factory=dict)
    output: dict[str, Decimal] = field(default_factory=dict)
    by_day: dict[date, Energy] = field(default_factory=dict)


@dataclass
class Allocation:
    lines: list[LineTotal]
    products: list[ProductTotal]


def split(energy: Decimal, outputs: dict[str, Decimal]) -> dict[str, Decimal]:
    """`energy` in proportion to `outputs` (all > 0), summing exactly to `energy`: each share
    rounded down to a thousandth of the energy's resolution, the quanta left over going to the
    largest remainders (ties by name). Shares take the energy's sign, never the other one."""
    exponent = energy.as_tuple().exponent
    quantum = Decimal((0, (1,), (exponent if isinstance(exponent, int) else 0) - 3))
    with localcontext(EXACT):
        total = sum(outputs.values(), Decimal(0))
        units = int(abs(energy) / quantum)  # exact: the quantum is finer than the energy
        exact = {p: units * outputs[p] / total for p in outputs}
        whole = {p: int(q) for p, q in exact.items()}  # rounded down (all >= 0)
        left = units - sum(whole.values())
        for p in sorted(outputs, key=lambda p: (whole[p] - exact[p], p))[:left]:
            whole[p] += 1
        sign = -1 if energy < 0 else 1
        return {p: sign * whole[p] * quantum for p in sorted(outputs)}


def allocate(latest: Iterable[ActivityRecord]) -> Allocation:
    """Energy per line and product from the latest revision of each record (see
    gateway.activity.report.latest_revisions); records of all meters must share one interval."""
    with localcontext(EXACT):  # products of fractions and sums stay exact
        return _allocate(latest)


def _allocate(latest: Iterable[ActivityRecord]) -> Allocation:
    energy: dict[tuple[datetime, str], Energy] = defaultdict(dict)
    output: dict[tuple[datetime, str], dict[str, Decimal]] = defaultdict(dict)
    for r in latest:
        if r.point_quantity is Quantity.PRODUCTION_COUNT:
            for share in r.allocation[:1]:  # a production counter belongs to one line
                out = output[r.period_start, share.line]
                product = r.product or r.point
                out[product] = out.get(product, Decimal(0)) + r.quantity
        elif r.point_quantity in CONSUMED:
            for share in r.allocation:
                _add(
                    energy[r.period_start, share.line],
                    (r.carrier.value, r.unit),
                    r.quantity * share.fraction,
                )

    lines: dict[str, LineTotal] = {}
    products: dict[tuple[str, str], ProductTotal] = {}
    for key in sorted(set(energy) | set(output)):
        start, line = key
        day = start.date()
        lt = lines.setdefault(line, LineTotal(line))
        made = {p: q for p, q in output.get(key, {}).items() if q > 0}
        for p, q in made.items():
            lt.output[p] = lt.output.get(p, Decimal(0)) + q
            pt = products.setdefault((line, p), ProductTotal(line, p))
            pt.output += q
            day_out, day_energy = pt.by_day.get(day, (Decimal(0), {}))
            pt.by_day[day] = (day_out + q, day_energy)
        for ek, value in energy.get(key, {}).items():
            _add(lt.energy, ek, value)
            _add(lt.by_day.setdefault(day, {}), ek, value)
            if not made:
                _add(lt.idle, ek, value)
                continue
            for p, part in split(value, made).items():
                pt = products[line, p]
                _add(pt.energy, ek, part)
                _add(pt.by_day[day][1], ek, part)
    return Allocation(
        sorted(lines.values(), key=lambda x: x.line),
        sorted(products.values(), key=lambda x: (x.line, x.product)),
    )
