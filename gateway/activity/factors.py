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
from typing import Annotated, Any

from pydantic import Field

from gateway.errors import TanjiError
from gateway.models import Carrier, ConfigBool, Frozen
from gateway.units import UnitError, convert

COAL_FILE = "gbt2589-2020.toml"
GRID_FILE = "cn-grid-emission-factors.toml"
FOOTPRINT_FILE = "cn-electricity-footprint-factors.toml"


class FactorError(TanjiError, ValueError):
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

    coal_equivalent: ConfigBool = Field(default=True, description="add tce per GB/T 2589-2020")
    electricity_emission_factor: str | None = Field(
        default=None, description="id in gateway/data/cn-grid-emission-factors.toml"
    )
    electricity_footprint_factor: str | None = Field(
        default=None, description="id in gateway/data/cn-electricity-footprint-factors.toml"
    )
    coal_equivalent_overrides: dict[str, Annotated[Decimal, Field(gt=0, le=10_000)]] = Field(
        default_factory=dict,
        description="kgce per unit by carrier, e.g. the measured value for natural_gas",
    )
    allow_unverified: ConfigBool = False


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
    """Grid CO2 emission factors (organisational accounting), by id."""
    return _per_mwh(GRID_FILE, "factors")


@functools.cache
def footprint_factors() -> dict[str, Factor]:
    """Electricity carbon-footprint factors (product footprints, life cycle), by id."""
    return _per_mwh(FOOTPRINT_FILE, "footprint_factors")


def _per_mwh(file: str, table: str) -> dict[str, Factor]:
    out: dict[str, Factor] = {}
    for row in _data(file).get(table, []):
        if row.get("unit") != "t/MWh":
            raise FactorError(f"{file}: {row['id']} is in {row.get('unit')!r}, not t/MWh")
        out[row["id"]] = Factor(
            id=row["id"],
            value=Decimal(str(row["value"])),
            per_unit="MWh",
            verified=bool(row.get("verified")),
            source=f"{row.get('document', '')} {row.get('source_ref', '')}".strip(),
        )
    return out


def _chosen(
    setting: str, factor_id: str | None, known: dict[str, Factor], file: str
) -> Factor | None:
    """The factor a `[factors]` setting names, or None when it names none."""
    if factor_id is None:
        return None
    if factor_id not in known:
        raise FactorError(
            f"{setting} {factor_id!r} is not in gateway/data/{file}; known:"
            f" {', '.join(sorted(known))}"
        )
    return known[factor_id]


@dataclass(frozen=True)
class Conversions:
    tce: Decimal | None
    co2e_t: Decimal | None
    co2e_footprint_t: Decimal | None
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
        self.grid = _chosen(
            "electricity_emission_factor",
            config.electricity_emission_factor,
            grid_factors(),
            GRID_FILE,
        )
        self.footprint = _chosen(
            "electricity_footprint_factor",
            config.electricity_footprint_factor,
            footprint_factors(),
            FOOTPRINT_FILE,
        )
        if not config.allow_unverified:
            chosen = [f for f in (self.grid, self.footprint) if f is not None]
            unverified = [f.id for f in [*self.coal.values(), *chosen] if not f.verified]
            self.coal = {c: f for c, f in self.coal.items() if f.verified}
            for factor in chosen:
                if not factor.verified:
                    raise FactorError(
                        f"{factor.id} is marked unverified in gateway/data; set"
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
        co2e = self._per_mwh(self.grid, carrier, quantity, unit, used)
        footprint = self._per_mwh(self.footprint, carrier, quantity, unit, used)
        return Conversions(tce, co2e, footprint, tuple(used))

    @staticmethod
    def _per_mwh(
        factor: Factor | None, carrier: Carrier, quantity: Decimal, unit: str, used: list[str]
    ) -> Decimal | None:
        if factor is None or carrier is not Carrier.ELECTRICITY:
            return None
        try:
            value = convert(quantity, unit, "MWh") * factor.value
        except UnitError:
            return None
        used.append(factor.id)
        return value
