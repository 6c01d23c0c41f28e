"""Site configuration: every error names its field path and what is allowed."""

from __future__ import annotations

import copy
import inspect
import math
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
    assert f"mqtt: password_file {tmp_path / 'absent'}" in result.output
    assert "No such file" in result.output
    absent = f'password_file = "{tmp_path / "absent"}"'
    site.write_text(text.replace(absent, f'ca_file = "{site}"\n{absent}'))
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2, result.output
    assert f"mqtt: ca_file {site}" in result.output  # not a certificate


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


# --- numbers: finite, bounded, of the type written (issue 15) -----------------------------------

NUMBER_CASES = [
    # each of these passed check-config once and broke the run (OverflowError every 60 s,
    # every aggregation pass failing) or was silently converted
    (["store", "retention_days"], math.inf, "store.retention_days: must be a finite number"),
    (["store", "retention_days"], 1e300, "store.retention_days: input should be less than"),
    (["store", "max_disk_mb"], math.inf, "store.max_disk_mb: must be a finite number (got inf)"),
    (["store", "max_disk_mb"], 1e300, "store.max_disk_mb: input should be less than"),
    (["store", "commit_interval_s"], math.nan, "store.commit_interval_s: must be a finite"),
    (["aggregation", "gap_limit_s"], math.inf, "aggregation.gap_limit_s: must be a finite"),
    (["aggregation", "gap_limit_s"], 1e300, "aggregation.gap_limit_s: input should be less"),
    (["aggregation", "grace_s"], "10", "aggregation.grace_s: must be a number without quotes"),
    (
        ["meters", 0, "connection", "port"],
        "502",
        "meters[0].connection.port: must be a whole number 1..65535 without quotes (got '502')",
    ),
    (
        ["meters", 0, "connection", "port"],
        502.0,
        "meters[0].connection.port: must be a whole number 1..65535 (got 502.0)",
    ),
    (
        ["meters", 0, "connection", "unit_id"],
        True,
        "meters[0].connection.unit_id: must be a whole number 0..255, not true/false",
    ),
    (
        ["meters", 0, "connection", "poll_interval_s"],
        math.inf,
        "meters[0].connection.poll_interval_s: must be a finite number",
    ),
    (
        ["meters", 0, "connection", "poll_interval_s"],
        1e-300,
        "meters[0].connection.poll_interval_s: input should be greater than or equal to 0.01",
    ),
    (
        ["meters", 0, "connection", "timeout_s"],
        "2",
        "meters[0].connection.timeout_s: must be a number without quotes (got '2')",
    ),
    (
        ["meters", 0, "connection", "backoff_max_s"],
        math.nan,
        "meters[0].connection.backoff_max_s: must be a finite number",
    ),
    (
        ["meters", 0, "points", 0, "scale"],
        -0.01,
        "meters[0].points[0]: scale of a counter must be positive (got -0.01): it would count"
        " backwards",
    ),
    (["meters", 0, "points", 0, "scale"], "inf", "meters[0].points[0].scale: must be a finite"),
    (["meters", 0, "points", 0, "scale"], 1e300, "meters[0].points[0].scale: input should be"),
    (["meters", 0, "points", 0, "scale"], True, "meters[0].points[0].scale: must be a number"),
    (["meters", 0, "points", 0, "scale"], 1e-300, "meters[0].points[0]: scale must be at least"),
    (["meters", 0, "points", 0, "offset"], "NaN", "meters[0].points[0].offset: must be a finite"),
    (["meters", 0, "points", 0, "plausible_max"], 1e300, "meters[0].points[0].plausible_max:"),
    (
        ["meters", 0, "points", 0, "function_code"],
        3.0,
        "meters[0].points[0].function_code: must be a whole number (got 3.0)",
    ),
    (["meters", 0, "rated_power_kw"], "inf", "meters[0].rated_power_kw: must be a finite"),
    (["meters", 0, "rated_power_kw"], 1e300, "meters[0].rated_power_kw: input should be less"),
    (
        ["mqtt", "keepalive_s"],
        10**400,
        "mqtt.keepalive_s: must be 5..3600 (got a number of about 400",
    ),
    (["mqtt", "ack_timeout_s"], math.inf, "mqtt.ack_timeout_s: must be a finite number"),
    (["mqtt", "readings"], "yes", "mqtt.readings: must be true or false"),
    (["mqtt", "readings"], 1, "mqtt.readings: must be true or false"),
    (["aggregation", "send_without_valid_calibration"], "false", "aggregation.send_without"),
    (
        ["mirror"],
        {"url": "http://127.0.0.1:8086", "org": "o", "bucket": "b", "interval_s": "5"},
        "mirror.interval_s: must be a number without quotes",
    ),
    (
        ["factors"],
        {"coal_equivalent_overrides": {"natural_gas": "inf"}},
        "factors.coal_equivalent_overrides.natural_gas: must be a finite number",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), NUMBER_CASES)
def test_numbers_are_finite_bounded_and_not_converted(path, value, expected):
    found = problems(set_path(example(), path, value))
    assert any(p.startswith(expected) for p in found), found


def test_an_error_quotes_a_huge_number_in_short():
    (problem,) = problems(set_path(example(), ["meters", 0, "connection", "port"], 10**5000))
    assert len(problem) < 120, problem


def test_a_number_of_thousands_of_digits_is_a_problem_not_a_traceback(tmp_path: Path):
    site = tmp_path / "site.toml"
    site.write_text(EXAMPLE.read_text().replace("port = 5020", "port = " + "9" * 5000))
    with pytest.raises(ConfigError) as info:
        load_site_config(site)
    (problem,) = info.value.problems
    assert str(problem).startswith("not valid TOML: Exceeds the limit (4300 digits)")


def test_a_negative_scale_is_fine_on_a_gauge():
    data = set_path(example(), ["meters", 0, "points", 1, "scale"], -1)  # active_power, a gauge
    assert parse_site_config(data).meters[0].points[1].scale == -1


def test_the_largest_allowed_values_do_not_break_the_run(tmp_path: Path):
    """The bounds are where the run still works: store limits enforced and an aggregation pass
    made at the top of every range (before, inf and 1e300 passed and failed every minute)."""
    import asyncio

    from gateway.runtime.supervisor import Gateway

    data = example()
    data["store"] = {
        "path": str(tmp_path / "g.db"),
        "retention_days": 36500,
        "max_disk_mb": 100_000_000,
        "commit_interval_s": 60,
    }
    data["aggregation"] = {"interval": "15min", "gap_limit_s": 31 * 86400, "grace_s": 3600}
    data["meters"][0]["connection"]["poll_interval_s"] = 86400

    async def main() -> None:
        gw = Gateway(parse_site_config(data))
        try:
            await gw.writer.enforce_limits()
            await gw.aggregator.due()
        finally:
            await gw.close()

    asyncio.run(main())


# every numeric field of every model that site.toml fills: a type that refuses text and
# booleans, finite, with a lower and an upper bound. Fields read from CSV certificate files
# too (CalibrationRecord) keep lax types, so a cell "2" is a number there.
LAX_FOR_CSV = {
    "CalibrationRecord.coverage_factor",
    "CalibrationRecord.reference_standard_is_national",
}


def _constraints(metadata: list) -> dict[str, object]:
    import annotated_types as at
    from pydantic import AllowInfNan, BeforeValidator, Strict
    from pydantic.fields import FieldInfo

    from gateway.models import IntRange

    found: dict[str, object] = {}
    for m in metadata:
        if isinstance(m, FieldInfo):
            found.update(_constraints(m.metadata))
        elif isinstance(m, at.Ge | at.Gt):
            found["lower"] = m
        elif isinstance(m, at.Le | at.Lt):
            found["upper"] = m
        elif isinstance(m, Strict):
            found["strict"] = m.strict
        elif isinstance(m, AllowInfNan):
            found["finite"] = not m.allow_inf_nan
        elif isinstance(m, BeforeValidator) and isinstance(m.func, IntRange):
            found.update(lower=m.func.lo, upper=m.func.hi, strict=True)
        elif isinstance(m, BeforeValidator) and m.func.__name__ == "_whole_number":
            found["strict"] = True
    return found


def _numeric_fields(tp, where: str, metadata: list, seen: set) -> list[tuple[str, type, dict]]:
    import typing
    from decimal import Decimal

    from pydantic import BaseModel

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _numeric_fields(args[0], where, [*metadata, *args[1:]], seen)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if tp in seen:
            return []
        seen.add(tp)
        out = []
        for name, field in tp.model_fields.items():
            owner = next(c for c in tp.__mro__ if name in inspect.get_annotations(c))
            out += _numeric_fields(
                field.annotation, f"{owner.__name__}.{name}", list(field.metadata), seen
            )
        return out
    if origin is typing.Literal:
        return [(where, int, _constraints(metadata))] if type(args[0]) is int else []
    if origin is not None or args:  # unions, tuples, dicts: their members
        members = args[1:] if origin is dict else args
        return [f for a in members for f in _numeric_fields(a, where, metadata, seen)]
    if tp in (int, float, Decimal, bool):
        return [(where, tp, _constraints(metadata))]
    return []


def test_every_number_in_the_site_configuration_is_bounded_and_strict():
    from decimal import Decimal

    from gateway.config import SiteConfig

    fields = _numeric_fields(SiteConfig, "SiteConfig", [], set())
    names = {w for w, _, _ in fields}
    # the walk reaches every part of site.toml
    for expected in (
        "StoreConfig.retention_days",
        "AggregationConfig.gap_limit_s",
        "MqttConfig.keepalive_s",
        "HttpsConfig.keepalive_s",
        "MirrorConfig.batch_size",
        "ModbusTcpConnection.port",
        "ModbusRtuConnection.baudrate",
        "ModbusPoint.scale",
        "OpcUaPoint.sampling_interval_ms",
        "OpcUaConnection.backoff_max_s",
        "ConnectionSpec.poll_interval_s",
        "MeterFields.rated_power_kw",
        "MeterFields.lines",
        "FactorsConfig.coal_equivalent_overrides",
        "BalanceConfig.tolerance_percent",
        "MeterReplacement.old_final",
        "PointSpec.plausible_max",
    ):
        assert expected in names, sorted(names)
    wrong = []
    for where, tp, c in fields:
        literal = where.endswith(("baudrate", "bytesize", "stopbits", "function_code"))
        if tp is not bool and not literal and not ("lower" in c and "upper" in c):
            wrong.append(f"{where}: no range")
        if tp is float and not c.get("finite"):
            wrong.append(f"{where}: inf/nan allowed")
        if tp in (int, float, bool) and not c.get("strict") and where not in LAX_FOR_CSV:
            wrong.append(f"{where}: converts text")
        if tp is Decimal and c.get("finite") is False:
            wrong.append(f"{where}: inf/nan allowed")
    assert not wrong, wrong


# --- what the run needs from this machine: check-config and run ask the same -------------------


def write_site(tmp_path: Path, replacements: dict[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    site = tmp_path / "site.toml"
    site.write_text(text)
    return site


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("{tmp}", "store.path: {tmp} is a folder; name the store file in it"),
        ("{tmp}/site.toml/tanji.db", "store.path: cannot create {tmp}/site.toml/tanji.db:"),
    ],
)
def test_a_store_path_that_cannot_be_a_file_is_an_error(tmp_path: Path, store: str, expected):
    site = write_site(tmp_path, {'path = "tanji.db"': f'path = "{store.format(tmp=tmp_path)}"'})
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 2, result.output
    assert expected.format(tmp=tmp_path) in result.output
    assert "Traceback" not in result.output


def test_a_store_in_folders_still_to_be_made_is_fine(tmp_path: Path):
    site = write_site(tmp_path, {'path = "tanji.db"': 'path = "data/gateway/tanji.db"'})
    result = CliRunner().invoke(app, ["check-config", str(site)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "data").exists()  # checking creates nothing


PLAIN = 'broker_url = "mqtt://127.0.0.1:1883"'


@pytest.mark.parametrize("host", ["192.0.2.10", "broker.example.cn", "0.0.0.0"])
def test_a_password_in_clear_over_the_network_is_refused(host: str):
    data = example()
    data["mqtt"].update(broker_url=f"mqtt://{host}:1883", username="gw", password_env="PW")
    assert problems(data) == [
        f"mqtt: password_env: the password would cross the network in clear (broker_url is"
        f" plain mqtt:// to {host}, not this machine); use mqtts://, or set"
        " allow_plaintext_password = true if that network is trusted"
    ]
    data["mqtt"]["allow_plaintext_password"] = True
    assert parse_site_config(data).mqtt.plaintext_password
    data["mqtt"]["broker_url"] = f"mqtts://{host}:8883"
    del data["mqtt"]["allow_plaintext_password"]
    assert not parse_site_config(data).mqtt.plaintext_password


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "[::1]"])
def test_a_password_to_this_machines_broker_may_go_plain(host: str):
    data = example()
    data["mqtt"].update(broker_url=f"mqtt://{host}:1883", username="gw", password_file="/pw")
    assert not parse_site_config(data).mqtt.plaintext_password


def test_a_gap_limit_below_two_polls_is_refused():
    """Review of issue 15: with readings further apart than the gap limit, every reading
    stood alone and no glitch could be told (a dip to 0 booked 1000 kWh)."""
    data = tomllib.loads(EXAMPLE.read_text())
    data["aggregation"] = {"gap_limit_s": 3}
    data["meters"][0]["connection"]["poll_interval_s"] = 10
    with pytest.raises(
        ConfigError,
        match=r"gap_limit_s = 3 is less than twice the poll_interval_s of meter L1-MAIN",
    ):
        parse_site_config(data)
    data["aggregation"] = {"gap_limit_s": 20}
    parse_site_config(data)
