"""Uncertainty of activity figures (GUM, JCGM 100:2008). Pure functions; rules and a worked
example in docs/metrology.md.

A record's quantity is the counter's advance between two boundary values, so its uncertainty
has two kinds of parts:
- systematic: the meter's error, a fraction of the energy measured (from its certificate's
  relative U/k when it states one, else its accuracy class as a maximum permissible error,
  rectangular: u = MPE/sqrt(3)); the same meter's error is the same in all its periods, so
  these parts add *linearly* over periods;
- at each boundary: the register's resolution r (u = r/sqrt(12)) and, for an interpolated
  boundary, the counter's unknown course between the readings around it (true value anywhere
  between them: u = d/sqrt(12) for a step d); neighbouring periods share a boundary, so in a
  sum of consecutive periods only the outer boundaries remain.
Independent meters combine by root-sum-square. Expanded uncertainty U = k u_c with k = 2.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Iterable, Sequence
from decimal import Decimal, localcontext
from importlib import resources

from gateway.models import ActivityRecord, CalibrationRecord, Carrier, Uncertainty

K = Decimal(2)
CLASS_FILE = "accuracy-classes.toml"
_SQRT3 = Decimal(3).sqrt()
_SQRT12 = Decimal(12).sqrt()


@functools.cache
def class_limits() -> dict[tuple[str, str], Decimal]:
    """(carrier, class) -> maximum permissible error in % (gateway/data/accuracy-classes.toml)."""
    text = resources.files("gateway").joinpath("data", CLASS_FILE).read_text(encoding="utf-8")
    return {
        (c["carrier"], c["class"]): Decimal(c["mpe_percent"])
        for c in tomllib.loads(text)["classes"]
    }


def relative_systematic(
    carrier: Carrier, accuracy_class: str, calibration: CalibrationRecord | None
) -> tuple[Decimal | None, str]:
    """The meter's relative standard uncertainty and what it rests on."""
    stated = (calibration.expanded_uncertainty or "").strip() if calibration else ""
    number = next((stated[: -len(u)] for u in ("%", "\\percent") if stated.endswith(u)), None)
    if calibration and number is not None and calibration.coverage_factor:
        try:
            u_cert = Decimal(number.strip()) / 100
            k = Decimal(str(calibration.coverage_factor))
            usable = u_cert.is_finite() and k.is_finite() and 0 <= u_cert < 1 and k > 0
        except ArithmeticError:  # not a number: the class is used instead
            usable = False
        if usable:
            return u_cert / k, f"certificate {calibration.certificate_no}: U = {stated}, k = {k}"
    mpe = class_limits().get((carrier.value, accuracy_class.strip()))
    if mpe is None:
        return (
            None,
            f"no certificate uncertainty and no error limit known for class {accuracy_class}",
        )
    return mpe / 100 / _SQRT3, f"class {accuracy_class}: MPE {mpe} % (rectangular)"


def boundary_u(
    value: Decimal | None, interpolated: bool, step: Decimal, resolution: Decimal | None = None
) -> Decimal:
    """Standard uncertainty of a boundary value: the register's resolution (the point's, else
    the value's last digit), and for an interpolated one the step between the readings
    around it."""
    if value is None:
        return Decimal(0)  # nothing measured there: the record's coverage and flags say so
    if resolution is None:
        exponent = value.as_tuple().exponent
        resolution = Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0)
    with localcontext() as ctx:
        ctx.prec = 28
        u2 = (resolution / _SQRT12) ** 2 + ((step / _SQRT12) ** 2 if interpolated else 0)
        return u2.sqrt()


def record_uncertainty(
    quantity: Decimal,
    relative: Decimal | None,
    basis: str,
    u_start: Decimal,
    u_end: Decimal,
) -> Uncertainty | None:
    if relative is None:
        return None
    u_sys = abs(quantity) * relative
    return Uncertainty(
        u_systematic=_sig(u_sys),
        u_start=_sig(u_start),
        u_end=_sig(u_end),
        expanded=_sig(K * _rss([u_sys, u_start, u_end]), 4),
        k=K,
        basis=basis,
    )


def of_point(records: Sequence[ActivityRecord]) -> Decimal | None:
    """Combined standard uncertainty of the sum of one point's records (latest revisions):
    systematic parts add linearly; boundary parts count only at the ends of each run of
    consecutive periods. None when any record has no uncertainty."""
    ordered = sorted(records, key=lambda r: r.period_start)
    us = [r.uncertainty for r in ordered if r.uncertainty is not None]
    if len(us) != len(ordered):
        return None
    parts = [sum((u.u_systematic for u in us), Decimal(0))]
    for i, u in enumerate(us):
        if i == 0 or ordered[i - 1].period_end != ordered[i].period_start:
            parts.append(u.u_start)  # a run of consecutive periods starts here
        if i == len(us) - 1 or ordered[i].period_end != ordered[i + 1].period_start:
            parts.append(u.u_end)  # and ends here
    return _rss(parts)


def combined(u: Uncertainty) -> Decimal:
    """A record's combined standard uncertainty u_c."""
    return _rss([u.u_systematic, u.u_start, u.u_end])


def of_independent(us: Iterable[Decimal]) -> Decimal:
    """Combined standard uncertainty of a sum of independent meters' figures."""
    return _rss(list(us))


def _rss(parts: Sequence[Decimal]) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 28
        return sum((p * p for p in parts), Decimal(0)).sqrt()


def _sig(x: Decimal, digits: int = 10) -> Decimal:
    """x to `digits` significant digits (components keep enough to be combined again)."""
    if not x:
        return Decimal(0)
    with localcontext() as ctx:
        ctx.prec = digits
        return +x
