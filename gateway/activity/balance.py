"""Energy balance between a main meter and its sub-meters, per period: the check an energy
auditor runs first. Pure functions over activity records (latest revisions).

For each period both sides were measured in, imbalance = main - sum(sub-meters), relative to
the main meter's figure. The period is flagged when the imbalance exceeds the configured
tolerance (losses, unmetered loads) by more than the meters' own expanded uncertainty of the
difference (k = 2, the records' uncertainties combined by root-sum-square: the meters are
independent) can explain. A period in which a side has no record, or a gap or a step not
counted (counter backwards, implausible), is reported as not comparable rather than balanced:
an auditor must not read silence as agreement. (A meter without valid calibration still
compares; its records say so.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import Field, model_validator

from gateway.metrology.uncertainty import combined, of_independent
from gateway.models import ActivityFlag, ActivityRecord, Frozen

UNRELIABLE = {ActivityFlag.GAP, ActivityFlag.COUNTER_BACKWARDS, ActivityFlag.IMPLAUSIBLE_STEP}


class BalanceConfig(Frozen):
    """`[[balances]]` in site.toml: a main meter and the sub-meters behind it."""

    main: str = Field(min_length=1)
    subs: tuple[str, ...] = Field(min_length=1)
    point: str = "active_energy_import"
    tolerance_percent: Decimal = Field(default=Decimal(2), gt=0, le=100)

    @model_validator(mode="after")
    def _distinct(self) -> BalanceConfig:
        if self.main in self.subs or len(set(self.subs)) != len(self.subs):
            raise ValueError("the main meter and each sub-meter must be listed once")
        return self


@dataclass(frozen=True)
class BalanceResult:
    main: str
    period_start: datetime
    main_quantity: Decimal | None
    subs_quantity: Decimal | None
    difference: Decimal | None  # main - subs
    percent: Decimal | None  # of the main meter's figure
    state: str  # "ok", "imbalance", "not-comparable"
    why: str = ""
    expanded_uncertainty: Decimal | None = None  # U (k = 2) of the difference, when known


def check(balance: BalanceConfig, latest: Iterable[ActivityRecord]) -> list[BalanceResult]:
    """One result per period in which the main meter or a sub-meter has a record."""
    meters = {balance.main, *balance.subs}
    by_period: dict[datetime, dict[str, ActivityRecord]] = {}
    for r in latest:
        if r.meter_id in meters and r.point == balance.point:
            by_period.setdefault(r.period_start, {})[r.meter_id] = r
    return [_one(balance, start, found) for start, found in sorted(by_period.items())]


def _one(b: BalanceConfig, start: datetime, found: dict[str, ActivityRecord]) -> BalanceResult:
    missing = [m for m in (b.main, *b.subs) if m not in found]
    doubtful = [m for m, r in found.items() if UNRELIABLE & set(r.flags)]
    main = found.get(b.main)
    subs = sum((found[m].quantity for m in b.subs if m in found), Decimal(0))
    if missing or doubtful or main is None:
        why = "; ".join(
            x
            for x in (
                f"no record of {', '.join(missing)}" if missing else "",
                f"not fully measured: {', '.join(sorted(doubtful))}" if doubtful else "",
            )
            if x
        )
        return BalanceResult(
            b.main, start, main.quantity if main else None, subs, None, None, "not-comparable", why
        )
    difference = main.quantity - subs
    percent = difference / main.quantity * 100 if main.quantity else None
    parts = [found[m].uncertainty for m in (b.main, *b.subs)]
    known = [combined(x) for x in parts if x is not None]
    explained = 2 * of_independent(known) if len(known) == len(parts) else None
    allowed = abs(main.quantity) * b.tolerance_percent / 100 + (explained or 0)
    # (a main meter that measured nothing while the sub-meters did is an imbalance too)
    state = "imbalance" if abs(difference) > allowed else "ok"
    return BalanceResult(
        b.main, start, main.quantity, subs, difference, percent, state, "", explained
    )


def summary(results: Sequence[BalanceResult]) -> dict[str, int]:
    out = {"ok": 0, "imbalance": 0, "not-comparable": 0}
    for r in results:
        out[r.state] += 1
    return out
