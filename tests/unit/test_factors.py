"""Coal-equivalent and CO2 factors come from the sourced data files; unverified ones are
refused unless the site allows them; every record names the factors it used."""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from cloud_sync.contract import build_batch, parse_batch
from gateway.activity.factors import (
    FactorError,
    FactorsConfig,
    FactorSet,
    coal_coefficients,
    grid_factors,
)
from gateway.config import ConfigError, parse_site_config
from gateway.models import Carrier
from tests.unit.test_aggregation import reading, run

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"


def test_every_factor_names_its_source_and_parses():
    assert coal_coefficients()["electricity"].value == Decimal("0.1229")
    assert coal_coefficients()["electricity"].verified
    for f in [*coal_coefficients().values(), *grid_factors().values()]:
        assert f.source
        assert f.value > 0


def test_electricity_gets_tce_and_co2e_from_a_verified_factor():
    factors = FactorSet(
        FactorsConfig(electricity_emission_factor="cn-jiangsu-provincial-average-2023")
    )
    out = factors.apply(Carrier.ELECTRICITY, Decimal("1500"), "kWh")
    assert out.tce == Decimal("1500") * Decimal("0.1229") / 1000
    assert out.co2e_t == Decimal("1.5") * Decimal("0.5827")
    assert out.factors == ("gbt2589-2020:electricity", "cn-jiangsu-provincial-average-2023")


def test_unverified_coefficients_are_left_out_unless_allowed_or_overridden():
    strict = FactorSet(FactorsConfig())
    assert strict.apply(Carrier.NATURAL_GAS, Decimal(100), "m3").tce is None
    assert "gbt2589-2020:natural_gas" in strict.skipped_unverified
    measured = FactorSet(FactorsConfig(coal_equivalent_overrides={"natural_gas": Decimal("1.2")}))
    gas = measured.apply(Carrier.NATURAL_GAS, Decimal(100), "m3")
    assert gas.tce == Decimal("0.12")
    assert gas.factors == ("site:natural_gas",)


def site(**factors: object) -> dict:
    data = tomllib.loads(EXAMPLE.read_text())
    data["factors"] = factors
    return data


def test_site_errors_name_the_factor():
    with pytest.raises(ConfigError) as info:
        parse_site_config(site(electricity_emission_factor="cn-moon-2030"))
    assert "electricity_emission_factor 'cn-moon-2030' is not in" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_site_config(site(electricity_emission_factor="cn-jiangsu-provincial-average-2022"))
    assert "marked unverified" in str(info.value)
    parse_site_config(
        site(
            electricity_emission_factor="cn-jiangsu-provincial-average-2022", allow_unverified=True
        )
    )


def test_records_carry_their_conversions_through_the_contract():
    factors = FactorSet(FactorsConfig(electricity_emission_factor="cn-national-grid-average-2023"))
    readings = [reading(0, "100.00"), reading(60, "250.00")]
    assert run(readings, 0, 120).tce is None  # no factors given
    record = run(readings, 0, 120, factors=factors)
    assert record.tce == Decimal("150.00") * Decimal("0.1229") / 1000
    assert record.co2e_t == Decimal("0.150") * Decimal("0.5306")
    batch = build_batch("91350100M000100Y43", "gw", [record])
    parsed = parse_batch(json.dumps(batch).encode())  # validates against the JSON Schema
    assert parsed["records"][0]["factors"] == list(record.factors)


def test_the_electricity_carbon_footprint_factor_is_a_separate_figure():
    both = FactorSet(
        FactorsConfig(
            electricity_emission_factor="cn-national-grid-average-2023",
            electricity_footprint_factor="cn-national-electricity-footprint-2023",
        )
    )
    record = run([reading(0, "100.00"), reading(60, "250.00")], 0, 120, factors=both)
    assert record.co2e_t == Decimal("0.150") * Decimal("0.5306")  # organisational accounting
    assert record.co2e_footprint_t == Decimal("0.150") * Decimal("0.6205")  # product footprint
    assert "cn-national-electricity-footprint-2023" in record.factors
    with pytest.raises(FactorError, match="marked unverified"):
        FactorSet(FactorsConfig(electricity_footprint_factor="cn-coal-electricity-footprint-2023"))
    with pytest.raises(FactorError, match="known: "):
        FactorSet(FactorsConfig(electricity_footprint_factor="cn-moon-2030"))
