"""Site configuration: every error names its field path and what is allowed."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import ConfigError, load_site_config, parse_site_config

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)
    return [str(p) for p in info.value.problems]


def test_example_config_is_valid():
    config = load_site_config(EXAMPLE)
    assert config.meters[0].points[0].address == 0
    # a relative store path is relative to the config file
    assert config.store.path == EXAMPLE.parent / "tanji.db"


def set_path(data: dict, path: list, value) -> dict:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()

CASES = [
    (
        ["meters", 0, "points", 0, "address"],
        70000,
        "meters[0].points[0].address: must be 0..65535 (got 70000)",
    ),
    (
        ["meters", 0, "points", 0, "address"],
        -1,
        "meters[0].points[0].address: must be 0..65535 (got -1)",
    ),
    (["meters", 0, "connection", "port"], 0, "meters[0].connection.port: must be 1..65535 (got 0)"),
    (
        ["meters", 0, "connection", "unit_id"],
        300,
        "meters[0].connection.unit_id: must be 0..255 (got 300)",
    ),
    (
        ["meters", 0, "points", 0, "data_type"],
        "uint128",
        "meters[0].points[0].data_type: input should be",
    ),
    (
        ["meters", 0, "points", 0, "word_order"],
        "ABDC",
        "meters[0].points[0].word_order: input should be 'ABCD', 'CDAB', 'BADC' or 'DCBA'",
    ),
    (
        ["meters", 0, "points", 0, "function_code"],
        6,
        "meters[0].points[0].function_code: input should be 1, 2, 3 or 4 (got 6)",
    ),
    (
        ["meters", 0, "points", 0, "kind"],
        "meter",
        "meters[0].points[0].kind: input should be 'counter', 'gauge' or 'label'",
    ),
    (
        ["meters", 0, "points", 0, "unit"],
        "Wh",
        "meters[0].points[0]: unit 'Wh' does not match active_energy_import",
    ),
    (
        ["meters", 0, "points", 0, "quantity"],
        "energy",
        "meters[0].points[0].quantity: input should be",
    ),
    (["meters", 0, "points", 0, "scale"], 0, "meters[0].points[0]: scale must not be 0"),
    (["meters", 0, "points", 0, "adress"], 5, "meters[0].points[0].adress: is not a known field"),
    (["meters", 0, "points", 0, "address"], DELETE, "meters[0].points[0].address: is required"),
    (["meters", 0, "serial"], DELETE, "meters[0].serial: is required"),
    (["meters", 0, "carrier"], "coal", "meters[0].carrier: input should be"),
    (
        ["meters", 0, "protocol"],
        "bacnet",
        "meters[0].protocol: must be one of: modbus_rtu, modbus_rtu_over_tcp, modbus_tcp, opcua"
        " (got 'bacnet')",
    ),
    (["meters", 0, "calibration", "due_date"], "2027-13-01", "meters[0].calibration.due_date:"),
    (
        ["enterprise", "uscc"],
        "91350100M000100Y44",
        "enterprise.uscc: check character is '4', GB 32100 requires '3'",
    ),
    (["gateway_id"], "gw 1", "gateway_id: String should match pattern"),
    (["aggregation", "interval"], "7s", "aggregation.interval: '7s' is not an interval"),
    (
        ["aggregation", "timezone"],
        "Mars/Olympus",
        "aggregation.timezone: unknown time zone 'Mars/Olympus'",
    ),
    (
        ["aggregation", "timezone"],
        "Europe/Berlin",
        "aggregation.timezone: Europe/Berlin changes its UTC offset (daylight saving)",
    ),
    (["mqtt", "broker_url"], "http://x:1883", "mqtt.broker_url: scheme must be mqtt://"),
    (["mqtt", "broker_url"], "mqtt://127.0.0.1:99999", "mqtt.broker_url: port must be 1..65535"),
    (
        ["mqtt", "topic_prefix"],
        "tanji/#",
        "mqtt.topic_prefix: must be non-empty, without wildcards",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), CASES)
def test_each_error_names_its_field(path, value, expected):
    found = problems(set_path(example(), path, value))
    assert any(p.startswith(expected) for p in found), found


def test_counter_must_be_unsigned_or_float():
    data = set_path(example(), ["meters", 0, "points", 0, "data_type"], "int32")
    assert problems(data) == [
        "meters[0].points[0]: a counter must be unsigned or a float, not int32"
    ]


def test_duplicate_meter_ids():
    data = example()
    data["meters"].append(copy.deepcopy(data["meters"][0]))
    assert problems(data) == ["meter id 'L1-MAIN' is used twice"]


def test_points_are_named_by_quantity_unless_named():
    data = example()
    assert [p.name for p in parse_site_config(data).meters[0].points] == [
        "active_energy_import",
        "active_power",
    ]
    second = copy.deepcopy(data["meters"][0]["points"][0])
    data["meters"][0]["points"].append(second)
    assert problems(data) == [
        "meter 'L1-MAIN' has two points named 'active_energy_import'; give each a distinct `name`"
    ]
    second["name"] = "energy-check"
    assert parse_site_config(data).meters[0].points[2].name == "energy-check"
    second["name"] = "Energy Check"
    assert problems(data) == [
        "meters[0].points[2].name: 'Energy Check' is not a point name: 1-64 of a-z 0-9 _ . -"
        " (starting with a letter or digit)"
    ]


def test_every_problem_is_listed_not_just_the_first():
    data = example()
    data["meters"][0]["points"][0]["address"] = 70000
    data["meters"][0]["connection"]["port"] = 0
    data["enterprise"]["uscc"] = "123"
    data["meters"].append({"id": "M2", "protocol": "nope"})
    found = problems(data)
    assert len(found) == 4, found
    # no echo of inner errors as "list too short"
    assert not any("at least 1 item" in p for p in found)


def test_bad_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "site.toml"
    bad.write_text("gateway_id = \n")
    with pytest.raises(ConfigError) as info:
        load_site_config(bad)
    assert "not valid TOML" in str(info.value.problems[0])
    with pytest.raises(ConfigError) as info:
        load_site_config(tmp_path / "absent.toml")
    assert str(info.value.problems[0]) == "file not found"


def test_check_config_command_lists_errors_and_exits_2(tmp_path: Path):
    text = (
        EXAMPLE.read_text()
        .replace("address = 0 ", "address = 70000 ")
        .replace('uscc = "91350100M000100Y43"', 'uscc = "91350100M000100Y44"')
    )
    site = tmp_path / "site.toml"
    site.write_text(text)
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2
    output = result.output
    assert "meters[0].points[0].address: must be 0..65535 (got 70000)" in output
    assert "enterprise.uscc: check character" in output
    assert "Traceback" not in output


def test_check_config_ok_exits_0():
    result = CliRunner().invoke(app, ["check-config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_check_config_reads_the_platform_links_files(tmp_path: Path):
    """A password file or certificate that cannot be read is found before deployment."""
    text = EXAMPLE.read_text().replace(
        'broker_url = "mqtt://127.0.0.1:1883"',
        'broker_url = "mqtts://127.0.0.1:8883"\nusername = "gw"\n'
        f'password_file = "{tmp_path / "absent"}"',
    )
    site = tmp_path / "site.toml"
    site.write_text(text)
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2, result.output
    assert f"[mqtt] password_file {tmp_path / 'absent'}" in result.output
    assert "No such file" in result.output
    absent = f'password_file = "{tmp_path / "absent"}"'
    site.write_text(text.replace(absent, f'ca_file = "{site}"\n{absent}'))
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2, result.output
    assert f"ca_file {site}" in result.output  # not a certificate


def test_unknown_command_line_option_exits_2():
    result = CliRunner().invoke(app, ["demo", "--meters", "0"])
    assert result.exit_code == 2


def test_a_replacement_must_name_a_point_of_its_meter():
    data = example()
    data["meters"][0]["replacements"] = [
        {"at": "2026-11-20T10:00:00+08:00", "point": "energy", "old_final": 1, "new_initial": 0}
    ]
    found = problems(data)
    assert found == [
        "meter 'L1-MAIN': replacement at 2026-11-20T10:00:00+08:00 names point 'energy', which"
        " the meter does not have (active_energy_import, active_power)"
    ]


def test_meters_sharing_a_unit_id_make_one_readable_problem():
    data = example()
    meter = data["meters"][0]
    data["meters"] = [{**meter, "id": f"M{i}"} for i in range(50)]
    found = problems(data)
    assert found == ["meters 'M0', 'M1', 'M2' and 47 more all use unit id 1 on 127.0.0.1:5020"], (
        found
    )


def test_a_shared_line_has_one_setting():
    data = example()
    meter = data["meters"][0]
    slow = {**meter["connection"], "unit_id": 2, "backoff_max_s": 99.0}
    data["meters"] = [meter, {**meter, "id": "M2", "connection": slow}]
    (found,) = problems(data)
    assert found.startswith("meter(s) 'M2' share 127.0.0.1:5020 with 'L1-MAIN' but set it up")
    assert "'backoff_max_s': 99.0" in found


def test_a_modbus_point_cannot_be_a_label():
    data = example()
    data["meters"][0]["points"][0] = {
        "quantity": "product_code",
        "address": 0,
        "data_type": "uint16",
    }
    (problem,) = problems(data)
    assert problem.startswith("meters[0].points[0]: product_code is text; Modbus points here")
