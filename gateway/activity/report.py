"""Activity data for a span, summed per line, meter and point and allocated to products: a
terminal table, CSV of every record (or of hour/day/month roll-ups), and a self-contained HTML
page with bar charts of energy per line and per product unit (inline SVG, no scripts).

Sums are exact: consecutive records share their boundary values, so the sum of a point's
records over a span is its counter's advance. Only the latest revision of each period counts.
Pure functions over ActivityRecords; `span_report` reads them from a store it is given.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.activity.aggregation import EXACT
from gateway.activity.allocation import Allocation, allocate
from gateway.activity.balance import BalanceConfig, BalanceResult, check
from gateway.metrology import uncertainty
from gateway.models import ActivityFlag, ActivityRecord
from gateway.periods import Interval, datetime_to_ns, ns_to_datetime

if TYPE_CHECKING:
    from gateway.store.sqlite import Store


@dataclass
class Total:
    """The records of one point of one meter within the report's span."""

    line: str
    meter_id: str
    point: str
    carrier: str
    unit: str
    quantity: Decimal = Decimal(0)
    records: int = 0
    coverage_sum: float = 0.0
    flags: dict[str, int] = field(default_factory=dict)
    by_day: dict[date, Decimal] = field(default_factory=dict)
    u_c: Decimal | None = None  # combined standard uncertainty of `quantity`

    @property
    def coverage(self) -> float:
        return self.coverage_sum / self.records if self.records else 0.0

    @property
    def expanded(self) -> str:
        """U with k = 2, two significant digits (GUM 7.2.6), or '' when unknown."""
        return "" if self.u_c is None else f"{2 * self.u_c:.2g}"


def latest_revisions(records: Iterable[ActivityRecord]) -> list[ActivityRecord]:
    """One record per (meter, point, period start): the highest revision."""
    latest: dict[tuple[str, str, datetime], ActivityRecord] = {}
    for r in records:
        key = (r.meter_id, r.point, r.period_start)
        if key not in latest or r.revision > latest[key].revision:
            latest[key] = r
    return sorted(latest.values(), key=lambda r: (r.period_start, r.meter_id, r.point))


def totals(records: Sequence[ActivityRecord]) -> list[Total]:
    with localcontext(EXACT):  # float-derived quantities carry ~30 digits: sums stay exact
        return _totals(records)


def _totals(records: Sequence[ActivityRecord]) -> list[Total]:
    out: dict[tuple[str, str, str], Total] = {}
    members: dict[tuple[str, str, str], list[ActivityRecord]] = {}
    for r in latest_revisions(records):
        members.setdefault((r.line or "(no line)", r.meter_id, r.point), []).append(r)
        line = r.line or "(no line)"
        t = out.setdefault(
            (line, r.meter_id, r.point),
            Total(line, r.meter_id, r.point, r.carrier.value, r.unit),
        )
        t.quantity += r.quantity
        t.records += 1
        t.coverage_sum += r.coverage
        for flag in r.flags:
            t.flags[flag.value] = t.flags.get(flag.value, 0) + 1
        day = r.period_start.date()
        t.by_day[day] = t.by_day.get(day, Decimal(0)) + r.quantity
    for key, t in out.items():
        t.u_c = uncertainty.of_point(members[key])
    return sorted(out.values(), key=lambda t: (t.line, t.meter_id, t.point))


@dataclass
class Rollup:
    """The records of one point within one coarser period (hour, day, month)."""

    meter_id: str
    point: str
    line: str
    carrier: str
    unit: str
    start: datetime
    end: datetime
    quantity: Decimal = Decimal(0)
    records: int = 0
    covered_s: float = 0.0
    revised: int = 0
    flags: set[str] = field(default_factory=set)

    @property
    def coverage(self) -> float:
        return min(1.0, self.covered_s / (self.end - self.start).total_seconds())


def rollup(records: Sequence[ActivityRecord], by: Interval, tz: ZoneInfo) -> list[Rollup]:
    """Latest revisions summed per point and period of `by` (which the records' interval must
    divide, so each record falls in exactly one); exact, as the records' boundaries telescope."""
    with localcontext(EXACT):
        return _rollup(records, by, tz)


def _rollup(records: Sequence[ActivityRecord], by: Interval, tz: ZoneInfo) -> list[Rollup]:
    out: dict[tuple[str, str, int], Rollup] = {}
    for r in latest_revisions(records):
        if not Interval.parse(r.interval).divides(by):
            raise ValueError(f"{r.interval} records do not add up to whole {by} periods")
        start = by.start(datetime_to_ns(r.period_start), tz)
        row = out.get((r.meter_id, r.point, start))
        if row is None:
            row = out[r.meter_id, r.point, start] = Rollup(
                r.meter_id,
                r.point,
                r.line or "(no line)",
                r.carrier.value,
                r.unit,
                ns_to_datetime(start, tz),
                ns_to_datetime(by.end(start, tz), tz),
            )
        row.quantity += r.quantity
        row.records += 1
        row.covered_s += r.coverage * (r.period_end - r.period_start).total_seconds()
        row.revised += r.revision > 0
        row.flags.update(f.value for f in r.flags)
    return sorted(out.values(), key=lambda x: (x.start, x.meter_id, x.point))


ROLLUP_FIELDS = "line meter_id point carrier period_start period_end quantity unit coverage"
ROLLUP_FIELDS += " flags records revised_records"


def _csv(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def rollup_csv(rows: Sequence[Rollup]) -> str:
    return _csv(
        ROLLUP_FIELDS.split(),
        (
            (
                x.line,
                x.meter_id,
                x.point,
                x.carrier,
                x.start.isoformat(),
                x.end.isoformat(),
                str(x.quantity),
                x.unit,
                f"{x.coverage:.4f}",
                " ".join(sorted(x.flags)),
                x.records,
                x.revised,
            )
            for x in rows
        ),
    )


CSV_FIELDS = (
    "record_id",
    "revision",
    "supersedes",
    "interval",
    "line",
    "allocation",
    "product",
    "meter_id",
    "point",
    "carrier",
    "period_start",
    "period_end",
    "quantity",
    "unit",
    "coverage",
    "flags",
    "reading_count",
    "bad_reading_count",
    "calibration_certificate",
    "readings_root",
    "tce",
    "co2e_t",
    "co2e_footprint_t",
    "factors",
    "calibration_status",
    "expanded_uncertainty",
    "coverage_factor",
    "indicated_quantity",
    "correction_percent",
)


def to_csv(records: Sequence[ActivityRecord]) -> str:
    """Every record (latest revisions), exact decimals as printed, RFC 3339 local times."""
    return _csv(
        CSV_FIELDS,
        (
            [
                r.record_id,
                r.revision,
                r.supersedes or "",
                r.interval,
                r.line or "",
                " ".join(f"{a.line}={a.fraction}" for a in r.allocation),
                r.product or "",
                r.meter_id,
                r.point,
                r.carrier.value,
                r.period_start.isoformat(),
                r.period_end.isoformat(),
                str(r.quantity),
                r.unit,
                f"{r.coverage:.4f}",
                " ".join(f.value for f in r.flags),
                r.reading_count,
                r.bad_reading_count,
                r.calibration_certificate or "",
                r.readings_root,
                "" if r.tce is None else str(r.tce),
                "" if r.co2e_t is None else str(r.co2e_t),
                "" if r.co2e_footprint_t is None else str(r.co2e_footprint_t),
                " ".join(r.factors),
                str(r.calibration_status),
                "" if r.uncertainty is None else str(r.uncertainty.expanded),
                "" if r.uncertainty is None else str(r.uncertainty.k),
                "" if r.indicated_quantity is None else str(r.indicated_quantity),
                "" if r.correction_percent is None else str(r.correction_percent),
            ]
            for r in latest_revisions(records)
        ),
    )


def _bar_chart(title: str, days: list[date], series: dict[str, dict[date, Decimal]]) -> str:
    """Grouped bars per day, one colour per series; inline SVG."""
    colours = ["#2f6f9f", "#d08c2f", "#4f9f5f", "#9f4f7f", "#6f6f6f", "#3fa0a0"]
    width, height, left, bottom = 760, 300, 60, 40
    peak = max((v for s in series.values() for v in s.values()), default=Decimal(1)) or 1
    slot = (width - left - 10) / max(1, len(days))
    bar = slot * 0.8 / max(1, len(series))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 40}"'
        f' role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="14">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{height}" x2="{width - 10}" y2="{height}" stroke="#333"/>',
        f'<text x="4" y="34" font-size="11">{peak:.4g}</text>',
    ]
    for d_i, day in enumerate(days):
        x0 = left + d_i * slot + slot * 0.1
        parts.append(
            f'<text x="{x0:.1f}" y="{height + 14}" font-size="10">{day.isoformat()}</text>'
        )
        for s_i, (name, values) in enumerate(series.items()):
            v = values.get(day, Decimal(0))
            h = float(v / peak) * (height - bottom)
            parts.append(
                f'<rect x="{x0 + s_i * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}"'
                f' height="{h:.1f}" fill="{colours[s_i % len(colours)]}">'
                f"<title>{html.escape(name)} {day}: {v}</title></rect>"
            )
    for s_i, name in enumerate(series):
        y = height + 30
        x = left + s_i * 150
        parts.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10"'
            f' fill="{colours[s_i % len(colours)]}"/>'
            f'<text x="{x + 14}" y="{y}" font-size="11">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def per_unit(value: Decimal | None) -> str:
    return "" if value is None else f"{value.normalize():.6g}"


def _products_html(allocation: Allocation) -> str:
    """Charts of energy per product unit per day, then the line and product tables."""
    if not allocation.products:
        return ""
    sections = []
    keys = sorted({k for p in allocation.products for k in p.energy})
    for carrier, unit in keys:
        series: dict[str, dict[date, Decimal]] = {}
        for p in allocation.products:
            per_day = {
                day: e[carrier, unit] / out
                for day, (out, e) in p.by_day.items()
                if out and (carrier, unit) in e
            }
            if per_day:
                series[f"{p.line}/{p.product}"] = per_day
        days = sorted({d for v in series.values() for d in v})
        if days:
            sections.append(
                _bar_chart(f"{carrier}: {unit} per unit of product and day", days, series)
            )
    lines = "".join(
        f"<tr><td>{html.escape(x.line)}</td><td>{html.escape(c)}</td><td>{v}</td>"
        f"<td>{x.idle.get((c, u), Decimal(0))}</td><td>{html.escape(u)}</td>"
        f"<td>{html.escape(', '.join(f'{p} {q}' for p, q in sorted(x.output.items())))}</td></tr>"
        for x in allocation.lines
        for (c, u), v in sorted(x.energy.items())
    )
    products = "".join(
        f"<tr><td>{html.escape(p.line)}</td><td>{html.escape(p.product)}</td><td>{p.output}</td>"
        f"<td>{html.escape(c)}</td><td>{v}</td><td>{html.escape(u)}</td>"
        f"<td>{per_unit(p.per_unit((c, u)))}</td></tr>"
        for p in allocation.products
        for (c, u), v in sorted(p.energy.items())
    )
    return (
        "<h2>Energy per product</h2>"
        + "".join(sections)
        + "<table><tr><th>line</th><th>carrier</th><th>energy</th><th>idle (no output)</th>"
        + f"<th>unit</th><th>output</th></tr>{lines}</table><p></p>"
        + "<table><tr><th>line</th><th>product</th><th>output</th><th>carrier</th>"
        + f"<th>energy</th><th>unit</th><th>per unit</th></tr>{products}</table>"
    )


def to_html(title: str, rows: Sequence[Total], allocation: Allocation | None = None) -> str:
    """A self-contained page: per unit of measure, a chart of energy per line per day, the
    summary table, then energy per product (charts per unit of product and tables)."""
    sections = []
    for unit in sorted({t.unit for t in rows}):
        per_line: dict[str, dict[date, Decimal]] = defaultdict(dict)
        for t in rows:
            if t.unit != unit or t.carrier == "production":
                continue
            for day, v in t.by_day.items():
                per_line[t.line][day] = per_line[t.line].get(day, Decimal(0)) + v
        days = sorted({d for s in per_line.values() for d in s})
        if days:
            sections.append(_bar_chart(f"{unit} per line and day", days, dict(per_line)))
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "line",
            "meter",
            "point",
            "carrier",
            "quantity",
            "U (k=2)",
            "unit",
            "periods",
            "coverage",
            "flags",
        )
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                t.line,
                t.meter_id,
                t.point,
                t.carrier,
                t.quantity,
                t.expanded,
                t.unit,
                t.records,
                f"{t.coverage:.1%}",
                ", ".join(f"{k} x{n}" for k, n in sorted(t.flags.items())),
            )
        )
        + "</tr>"
        for t in rows
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        "td:nth-child(5){text-align:right}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}"
        f"<table><tr>{head}</tr>{body}</table>"
        f"{_products_html(allocation) if allocation else ''}</body></html>"
    )


def flagged(total: Total) -> bool:
    """A total that an auditor should look at before using it."""
    return any(
        total.flags.get(f.value)
        for f in (
            ActivityFlag.GAP,
            ActivityFlag.CALIBRATION_EXPIRED,
            ActivityFlag.COUNTER_BACKWARDS,
        )
    )


# --- a span of days, as `tanji report` shows it -----------------------------------------------


@dataclass(frozen=True)
class SpanReport:
    """The activity data of a span of days: every revision read, and the totals, the
    allocation to products and each energy balance of the latest revisions."""

    first: date
    last: date  # exclusive
    tz: ZoneInfo
    records: list[ActivityRecord]
    totals: list[Total]
    allocation: Allocation
    balances: list[tuple[BalanceConfig, list[BalanceResult]]]

    @property
    def flagged(self) -> bool:
        """Some totals include gaps, expired calibrations or counters going backwards."""
        return any(flagged(t) for t in self.totals)

    def csv(self, by: Interval | None = None) -> str:
        """Every record, or roll-ups per `by` (ValueError: records that do not divide it)."""
        return rollup_csv(rollup(self.records, by, self.tz)) if by else to_csv(self.records)

    def html(self, title: str) -> str:
        return to_html(title, self.totals, self.allocation)


def span_report(
    store: Store, first: date, last: date, tz: ZoneInfo, balances: Sequence[BalanceConfig] = ()
) -> SpanReport:
    """The records of the periods that start from `first` to `last` (exclusive; midnights in
    `tz`) in `store`, summed up (sqlite3.Error when the store cannot be read)."""

    def midnight(d: date) -> int:
        return datetime_to_ns(datetime(d.year, d.month, d.day, tzinfo=tz))

    records = store.activity_records(midnight(first), midnight(last))
    latest = latest_revisions(records)
    return SpanReport(
        first,
        last,
        tz,
        records,
        totals(records),
        allocate(latest),
        [(b, check(b, latest)) for b in balances],
    )
