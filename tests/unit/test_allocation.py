"""Energy per line and per product: meter fractions, split by output, idle energy kept apart,
sums exact."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import example as falsified_by
from hypothesis import given
from hypothesis import strategies as st

from gateway.activity.allocation import allocate, split
from gateway.activity.report import latest_revisions
from gateway.config import ConfigError, parse_site_config
from gateway.models import ActivityRecord, Carrier, LineShare, Quantity
from tests.unit.test_aggregation import reading, run
from tests.unit.test_config import example, problems

BASE = run([reading(-1, "1.00"), reading(1, "2.00")], 0, 2)
P1 = BASE.period_start
P2 = P1 + timedelta(minutes=15)


def energy(meter: str, kwh: str, start, shares: dict[str, str]) -> ActivityRecord:
    return BASE.model_copy(
        update={
            "meter_id": meter,
            "quantity": Decimal(kwh),
            "period_start": start,
            "allocation": tuple(LineShare(line=k, fraction=Decimal(v)) for k, v in shares.items()),
        }
    )


def made(line: str, product: str, units: str, start) -> ActivityRecord:
    return BASE.model_copy(
        update={
            "meter_id": f"plc-{line}",
            "point": f"count-{product}",
            "point_quantity": Quantity.PRODUCTION_COUNT,
            "carrier": Carrier.PRODUCTION,
            "unit": "unit",
            "product": product,
            "quantity": Decimal(units),
            "period_start": start,
            "allocation": (LineShare(line=line, fraction=Decimal(1)),),
        }
    )


def test_energy_follows_fractions_and_output_and_idle_energy_stays_with_the_line():
    records = [
        energy("E1", "100.00", P1, {"L1": "0.6", "L2": "0.4"}),
        energy("E1", "100.00", P2, {"L1": "0.6", "L2": "0.4"}),
        energy("E2", "50.00", P1, {"L1": "1"}),
        made("L1", "A", "30", P1),
        made("L1", "B", "10", P1),
        made("L2", "C", "5", P1),
        made("L2", "C", "5", P2),
    ]
    result = allocate(records)
    kwh = ("electricity", "kWh")
    lines = {x.line: x for x in result.lines}
    assert lines["L1"].energy[kwh] == Decimal("170.00")  # 60 + 50 + 60
    assert lines["L1"].idle[kwh] == Decimal("60.00")  # P2: nothing made on L1
    assert lines["L1"].output == {"A": 30, "B": 10}
    products = {(p.line, p.product): p for p in result.products}
    assert products["L1", "A"].energy[kwh] == Decimal("82.5")  # 110 x 30/40
    assert products["L1", "B"].energy[kwh] == Decimal("27.5")
    assert products["L1", "A"].per_unit(kwh) == Decimal("2.75")
    assert products["L2", "C"].per_unit(kwh) == Decimal("8")  # 80 kWh / 10 units
    # nothing lost: every kWh is with a product or idle
    allocated = sum(p.energy[kwh] for p in result.products)
    assert allocated + sum(x.idle.get(kwh, 0) for x in result.lines) == Decimal("250.00")


def test_only_the_latest_revision_counts():
    old = energy("E1", "100.00", P1, {"L1": "1"})
    new = old.model_copy(update={"quantity": Decimal("120.00"), "revision": 1})
    result = allocate(latest_revisions([old, new, made("L1", "A", "10", P1)]))
    assert result.products[0].per_unit(("electricity", "kWh")) == Decimal("12")


@given(
    kwh=st.integers(0, 10**9),
    outputs=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
)
@falsified_by(kwh=5, outputs=[1, 1, 1, 7996, 1])  # small shares rounding up pushed the last below 0
def test_a_split_sums_exactly_and_is_never_negative(kwh, outputs):
    total = Decimal(kwh) / 100
    shares = split(total, {f"p{i}": Decimal(o) for i, o in enumerate(outputs)})
    assert sum(shares.values()) == total
    assert all(s >= 0 for s in shares.values())


def site_with(**meter) -> dict:
    data = example()
    data["meters"][0].update(meter)
    if "lines" in meter:
        del data["meters"][0]["line"]
    return data


def test_fractions_must_add_up_to_one():
    found = problems(site_with(lines={"L1": 0.6, "L2": 0.3}))
    assert any("fractions add up to 0.9, not 1" in p for p in found), found
    config = parse_site_config(site_with(lines={"L1": 0.6, "L2": 0.4}))
    assert config.meters[0].meter().allocation == (
        LineShare(line="L1", fraction=Decimal("0.6")),
        LineShare(line="L2", fraction=Decimal("0.4")),
    )


def test_declared_lines_are_checked():
    data = example()
    data["lines"] = [{"id": "line-2"}]
    found = problems(data)
    assert any("names line 'line-1', which is not among the [[lines]] (line-2)" in p for p in found)


def test_a_product_needs_a_production_counter_on_one_line():
    data = example()
    data["meters"][0]["points"][0]["product"] = "cell-a"
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)
    assert "product is only for production_count points" in str(info.value)


def test_the_report_page_charts_energy_per_product_unit():
    from gateway.activity.report import to_html, totals

    records = [
        energy("E1", "100.00", P1, {"L1": "1"}),
        made("L1", "A", "30", P1),
        made("L1", "B", "10", P1),
    ]
    page = to_html("t", totals(records), allocate(records))
    assert "electricity: kWh per unit of product and day" in page
    assert "<td>L1</td><td>A</td><td>30</td><td>electricity</td><td>75.00000</td>" in page
    assert "<td>2.5</td>" in page  # 75 kWh / 30 units


def test_splitting_energy_with_many_digits_stays_exact():
    kwh = Decimal("3.743999999999687133822590121")  # a float64 register's difference
    shares = split(kwh, {"A": Decimal(3), "B": Decimal(7)})
    assert sum(shares.values()) == kwh
    result = allocate(
        [
            energy(
                "E1",
                str(kwh),
                P1,
                {"L1": "0.333333333333333333333", "L2": "0.666666666666666666667"},
            ),
            made("L1", "A", "3", P1),
            made("L1", "B", "7", P1),
        ]
    )
    lines = {x.line: x.energy[("electricity", "kWh")] for x in result.lines}
    assert lines["L1"] + lines["L2"] == kwh
