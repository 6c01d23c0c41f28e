"""Energy balance between a main meter and its sub-meters, per period: within tolerance,
beyond it, and periods that cannot be compared (missing records, gaps, uncounted steps)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from gateway.activity.balance import BalanceConfig, check, summary
from gateway.config import ConfigError, parse_site_config
from gateway.models import ActivityFlag, CalibrationStatus
from tests.unit.test_aggregation import reading, run
from tests.unit.test_config import example

BASE = run([reading(-1, "1.00"), reading(1, "2.00")], 0, 2)
P = [BASE.period_start + timedelta(minutes=15 * i) for i in range(4)]
BALANCE = BalanceConfig(main="MAIN", subs=("A", "B"), tolerance_percent=Decimal(2))


def rec(meter: str, kwh: str, start, **update):
    return BASE.model_copy(
        update={
            "meter_id": meter,
            "quantity": Decimal(kwh),
            "period_start": start,
            "flags": (),
            "calibration_status": CalibrationStatus.VALID,
            "uncertainty": None,
            **update,
        }
    )


def test_each_period_is_balanced_flagged_or_not_comparable():
    records = [
        *(rec("MAIN", "100.00", P[0]), rec("A", "60.00", P[0]), rec("B", "39.00", P[0])),
        *(rec("MAIN", "100.00", P[1]), rec("A", "60.00", P[1]), rec("B", "30.00", P[1])),
        *(rec("MAIN", "100.00", P[2]), rec("A", "60.00", P[2])),  # B has no record
        rec("MAIN", "100.00", P[3], flags=(ActivityFlag.GAP,)),
        rec("A", "50.00", P[3]),
        rec("B", "50.00", P[3], flags=(ActivityFlag.COUNTER_BACKWARDS,)),
    ]
    results = check(BALANCE, records)
    assert [r.state for r in results] == ["ok", "imbalance", "not-comparable", "not-comparable"]
    assert results[0].percent == Decimal(1)
    assert results[1].difference == Decimal("10.00")
    assert results[1].percent == Decimal(10)
    assert results[2].why == "no record of B"
    assert results[3].why == "not fully measured: B, MAIN"
    assert summary(results) == {"ok": 1, "imbalance": 1, "not-comparable": 2}


def test_a_main_meter_that_measured_nothing_while_sub_meters_did_is_an_imbalance():
    records = [rec("MAIN", "0.00", P[0]), rec("A", "1.00", P[0]), rec("B", "0.00", P[0])]
    (result,) = check(BALANCE, records)
    assert result.state == "imbalance"
    assert result.percent is None


def test_balances_in_site_toml_are_checked():
    data = example()
    data["balances"] = [{"main": "L1-MAIN", "subs": ["NOPE"]}]
    with pytest.raises(ConfigError, match="balances\\[0\\]: no meter 'NOPE'"):
        parse_site_config(data)
    data["balances"] = [{"main": "L1-MAIN", "subs": ["L1-MAIN"]}]
    with pytest.raises(ConfigError, match="listed once"):
        parse_site_config(data)


def test_an_imbalance_the_meters_uncertainty_explains_is_not_flagged():
    from gateway.models import Uncertainty

    def unc(u: str) -> Uncertainty:
        return Uncertainty(
            u_systematic=Decimal(u),
            u_start=Decimal(0),
            u_end=Decimal(0),
            expanded=Decimal(0),
            k=Decimal(2),
            basis="test",
        )

    # 3 % apart with a 2 % tolerance: 0.01 kWh beyond it
    records = [rec("MAIN", "1.00", P[0]), rec("A", "0.50", P[0]), rec("B", "0.47", P[0])]
    assert check(BALANCE, records)[0].state == "imbalance"
    # the meters' uncertainty (u = 0.01 kWh each: U of the difference ~0.035) explains it
    uncertain = [r.model_copy(update={"uncertainty": unc("0.01")}) for r in records]
    (result,) = check(BALANCE, uncertain)
    assert result.state == "ok"
    assert result.expanded_uncertainty is not None
    assert round(result.expanded_uncertainty, 3) == Decimal("0.035")
