"""`tanji discover modbus` against the simulator in its own process: finds the units, names the
fitting profile, and prints a site.toml fragment that check-config accepts once completed."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator

import pytest

from gateway.cli.demo_site import DEMO_USCC, free_port_range
from gateway.config import parse_site_config

TANJI = [sys.executable, "-m", "gateway"]


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`tanji sim modbus` with the given args; yields the first link's address it prints."""
    proc = subprocess.Popen(
        [*TANJI, "sim", "modbus", *request.param],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline().split()  # e.g. "tcp 127.0.0.1:5020: unit id(s) 1..3 (...)"
    yield first[1].rstrip(":"), proc
    proc.terminate()
    proc.wait(timeout=10)


def discover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TANJI, "discover", "modbus", *args], capture_output=True, text=True, timeout=120
    )


def completed_site(fragment: str) -> dict:
    site = tomllib.loads(fragment)
    for meter in site["meters"]:
        meter.update(serial="S-1", accuracy_class="1")
    return {"enterprise": {"name": "x", "uscc": DEMO_USCC}, "gateway_id": "gw", **site}


PORT = free_port_range(1)


@pytest.mark.parametrize(
    "simulator",
    [["--meters", "3", "--units-per-link", "3", "--base-port", str(PORT)]],
    indirect=True,
)
def test_discover_tcp_gateway_finds_each_unit_and_its_profile(simulator):
    where, _ = simulator
    result = discover(where, "--units", "1-5", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    fragment = result.stdout[result.stdout.index("# found by") :]
    site = completed_site(fragment)
    assert [m["connection"]["unit_id"] for m in site["meters"]] == [1, 2, 3]  # 4, 5 absent
    assert {m["profile"] for m in site["meters"]} == {"tanji-sim"}
    config = parse_site_config(site)
    assert config.meters[0].points[0].name == "active_energy_import"
    # serial and accuracy class are left for the engineer: as printed, check-config refuses
    with pytest.raises(Exception, match="serial"):
        parse_site_config({**site, "meters": tomllib.loads(fragment)["meters"]})


@pytest.mark.parametrize(
    "simulator", [["--meters", "2", "--units-per-link", "2", "--transport", "rtu"]], indirect=True
)
def test_discover_on_a_serial_line(simulator):
    device, _ = simulator
    result = discover("--serial", device, "--parity", "N", "--units", "1-3", "--timeout", "0.3")
    assert result.returncode == 0, result.stderr
    site = completed_site(result.stdout[result.stdout.index("# found by") :])
    assert [(m["protocol"], m["connection"]["unit_id"]) for m in site["meters"]] == [
        ("modbus_rtu", 1),
        ("modbus_rtu", 2),
    ]
    assert site["meters"][0]["connection"]["serial_port"] == device
    parse_site_config(site)


def test_discover_bad_arguments_and_dead_targets():
    result = discover("127.0.0.1:1", "--units", "a-b")
    assert result.returncode == 2
    assert "--units: 'a-b' is not like 1-16 or 1,3,5" in result.stderr
    result = discover()
    assert result.returncode == 2
    assert "give either TARGET" in result.stderr
    result = discover(f"127.0.0.1:{free_port_range(1)}", "--units", "1")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr
