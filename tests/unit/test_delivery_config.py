"""Delivery policy in [delivery], the transport in [platform]: older site files with the policy
under [mqtt] still load (and check-config says where it belongs now); the same setting in
both places is an error naming both."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloud_sync import DeliveryConfig
from gateway.cli import app
from gateway.config import ConfigError, parse_site_config

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"


def example(tmp_path: Path) -> dict[str, Any]:
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "tanji.db")
    return data


def check_config(tmp_path: Path, data: dict[str, Any]) -> tuple[int, str]:
    import tomli_w

    site = tmp_path / "site.toml"
    site.write_bytes(tomli_w.dumps(data).encode())
    result = CliRunner().invoke(app, ["check-config", str(site)])
    return result.exit_code, " ".join(result.output.split())


def test_the_example_gives_delivery_and_platform_their_own_sections(tmp_path: Path):
    data = example(tmp_path)
    assert data["platform"] == {"transport": "mqtt"}
    assert not set(data["mqtt"]) & set(DeliveryConfig.model_fields)  # none left in [mqtt]
    data["delivery"] |= {"batch_size": 10, "ack_timeout_s": 12.5}
    config = parse_site_config(data)
    assert (config.delivery.batch_size, config.delivery.ack_timeout_s) == (10, 12.5)
    assert config.link is config.mqtt
    assert config.moved_policy == ()
    code, out = check_config(tmp_path, data)
    assert code == 0, out
    assert "[delivery]" not in out  # nothing to move


def test_an_older_site_with_the_policy_under_mqtt_still_loads_and_is_told(tmp_path: Path):
    data = example(tmp_path)
    del data["delivery"], data["platform"]
    data["mqtt"] |= {"batch_size": 4, "ack_timeout_s": 5, "compression": "none"}
    config = parse_site_config(data)
    assert config.delivery == DeliveryConfig(batch_size=4, ack_timeout_s=5.0, compression="none")
    assert config.moved_policy == ("batch_size", "ack_timeout_s", "compression")
    code, out = check_config(tmp_path, data)
    assert code == 0, out
    assert (
        "note: [mqtt] batch_size, ack_timeout_s, compression: delivery settings, now in"
        " [delivery]" in out
    )
    # a bad value there is still named where it was written
    data["mqtt"]["batch_size"] = 0
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)
    assert [str(p) for p in info.value.problems] == ["mqtt.batch_size: must be 1..10000 (got 0)"]


def test_the_same_setting_under_mqtt_and_delivery_is_refused_naming_both(tmp_path: Path):
    data = example(tmp_path)
    data["mqtt"] |= {"batch_size": 4, "readings_batch_size": 100}
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)  # the example's [delivery] gives batch_size
    (problem,) = info.value.problems
    assert "batch_size: given both under [mqtt]" in str(problem)
    assert "under [delivery]" in str(problem)
    assert "readings_batch_size" not in str(problem)  # given once ([mqtt]): taken
    code, out = check_config(tmp_path, data)
    assert code == 2
    assert (
        "batch_size: given both under [mqtt] (as older site files did) and under [delivery]" in out
    )


def test_platform_names_a_known_transport(tmp_path: Path):
    data = example(tmp_path)
    data["platform"]["transport"] = "carrier-pigeon"
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)
    assert str(info.value.problems[0]).startswith("platform.transport: ")
    assert "mqtt" in str(info.value.problems[0])
