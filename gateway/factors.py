"""Conversion factors from versioned data files (gateway/data/): standard coal equivalent per
GB/T 2589-2020 and CO2 emission factors for purchased electricity, each with its source.

A factor whose data file marks it `verified = false` (the value could not be read in the
publication itself) is refused unless the site says `allow_unverified = true`: a certified
footprint must not rest on a number nobody checked. Every record names the factors it used.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any

from pydantic import Field

from gateway.models import Carrier, Frozen
from gateway.units import UnitError, convert

COAL_FILE = "gbt2589-2020.toml"
GRID_FILE = "cn-grid-emission-factors.toml"


class FactorError(ValueError):
    pass


@dataclass(frozen=True)
class Factor:
    id: str
    value: Decimal
    per_unit: str  # the carrier's unit the value is per (e.g. kWh, m**3, MWh)
    verified: bool
    source: str


class FactorsConfig(Frozen):
    """`[factors]` in site.toml."""

    coal_equivalent: bool = Field(default=True, description="add tce per GB/T 2589-2020")
    electricity_emission_factor: str | None = Field(
        default=None, description="id in gateway/data/cn-grid-emission-factors.toml"
    )
    coal_equivalent_overrides: dict[str, Decimal] = Field(
        default_factory=dict,
        description="kgce per unit by carrier, e.g. the measured value for natural_gas",
    )
    allow_unverified: bool = False


def _data(name: str) -> dict[str, Any]:
    text = (resources.files("gateway") / "data" / name).read_text(encoding="utf-8")
    return tomllib.loads(text)


@functools.cache
def coal_coefficients() -> dict[str, Factor]:
    """Carrier -> kgce per unit, from the GB/T 2589-2020 file (single values only: a range
    needs the site's own value in `coal_equivalent_overrides`)."""
    data = _data(COAL_FILE)
    out: dict[str, Factor] = {}
    for row in data.get("coefficients", []):
        value = str(row.get("kgce_per_unit", "")).strip()
        if not value:
            continue
        out.setdefault(
            row["carrier"],
            Factor(
                id=f"gbt2589-2020:{row['carrier']}",
                value=Decimal(value),
                per_unit=row["unit"],
                verified=bool(row.get("verified")),
                source=f"{data['source']['standard']} {row.get('source_ref', '')}".strip(),
            ),
        )
    return out


@functools.cache
def grid_factors() -> dict[str, Factor]:
    out: dict[str, Factor] = {}
    for row in _data(GRID_FILE).get("factors", []):
        if row.get("unit") != "t/MWh":
            raise FactorError(f"{GRID_FILE}: {row['id']} is in {row.get('unit')!r}, not t/MWh")
        out[row["id"]] = Factor(
            id=row["id"],
            value=Decimal(str(row["value"])),
            per_unit="MWh",
            verified=bool(row.get("verified")),
            source=f"{row.get('document', '')} {row.get('source_ref', '')}".strip(),
        )
    return out


@dataclass(frozen=True)
class Conversions:
    tce: Decimal | None
    co2e_t: Decimal | None
    factors: tuple[str, ...]


class FactorSet:
    """The factors a site uses, checked once at start-up (FactorError says what is wrong)."""

    def __init__(self, config: FactorsConfig) -> None:
        self.config = config
        self.coal: dict[str, Factor] = {}
        if config.coal_equivalent:
            self.coal = dict(coal_coefficients())
            for carrier, value in config.coal_equivalent_overrides.items():
                if carrier not in Carrier.__members__.values():
                    raise FactorError(f"coal_equivalent_overrides: unknown carrier {carrier!r}")
                base = self.coal.get(carrier)
                self.coal[carrier] = Factor(
                    id=f"site:{carrier}",
                    value=value,
                    per_unit=base.per_unit if base else "m**3",
                    verified=True,  # the site's own measured value, its responsibility
                    source="site.toml coal_equivalent_overrides",
                )
        self.grid: Factor | None = None
        if config.electricity_emission_factor is not None:
            known = grid_factors()
            if config.electricity_emission_factor not in known:
                raise FactorError(
                    f"electricity_emission_factor {config.electricity_emission_factor!r} is"
                    f" not in gateway/data/{GRID_FILE}; known: {', '.join(sorted(known))}"
                )
            self.grid = known[config.electricity_emission_factor]
        if not config.allow_unverified:
            unverified = [f.id for f in [*self.coal.values(), self.grid] if f and not f.verified]
            self.coal = {c: f for c, f in self.coal.items() if f.verified}
            if self.grid is not None and not self.grid.verified:
                raise FactorError(
                    f"{self.grid.id} is marked unverified in gateway/data/{GRID_FILE}; set"
                    " allow_unverified = true to use it anyway"
                )
            self.skipped_unverified = unverified
        else:
            self.skipped_unverified = []

    def apply(self, carrier: Carrier, quantity: Decimal, unit: str) -> Conversions:
        """tce and tCO2e of `quantity` (in `unit`) of `carrier`, where factors exist."""
        used: list[str] = []
        tce = co2e = None
        coal = self.coal.get(carrier.value)
        if coal is not None:
            try:
                kgce = convert(quantity, unit, coal.per_unit) * coal.value
            except UnitError:
                kgce = None
            if kgce is not None:
                tce = kgce / 1000
                used.append(coal.id)
        if self.grid is not None and carrier is Carrier.ELECTRICITY:
            try:
                co2e = convert(quantity, unit, "MWh") * self.grid.value
                used.append(self.grid.id)
            except UnitError:
                co2e = None
        return Conversions(tce, co2e, tuple(used))
