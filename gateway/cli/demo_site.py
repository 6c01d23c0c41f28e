"""The demo's site: simulated meters on free ports of 127.0.0.1 (Modbus TCP, and a simulated
plant's line over OPC UA), their simulated certificates, the platform link, as a site.toml
holds it. Data only: `demo_chain` starts the parts."""

from __future__ import annotations

import socket
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w

from cloud_sync import LEGACY_POLICY_KEYS, legacy_policy
from gateway.config import SiteConfig, parse_site_config
from gateway.models import CalibrationRecord
from simulators.modbus_fleet import rated_kw
from simulators.opcua_plant import LineSpec, node_id

DEMO_USCC = "91320000MA1TANJ0D7"  # a made-up code with a valid GB 32100 check character


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """First port of `count` consecutive ports that are free on `host` right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


# the reference standard the demo meters were verified against: its own certificate goes into
# the registry under `std:`, so `tanji trace` reaches a (simulated) national standard
DEMO_STANDARD_ID = "std:demo-energy-standard"


DEMO_STANDARD = CalibrationRecord(
    certificate_no="DEMO-STD-0001",
    lab="demo national metrology institute (simulated)",
    accreditation_no="national metrology institute (simulated)",
    calibration_date=date.today() - timedelta(days=200),
    due_date=date.today() + timedelta(days=530),
    expanded_uncertainty="0.02 %",
    coverage_factor=2.0,
    reference_standard="national primary standard of electric energy (simulated)",
    reference_standard_is_national=True,
)


# M2's certificate is a Digital Calibration Certificate (gateway/data/demo/README.md),
# imported when the demo starts, due in 20 days
DCC_METER = 1


# production counters of the tanji-sim map (docs/simulators.md) and what they count
KWH = ("electricity", "kWh")


MAIN_FROM = 4  # with this many meters or more, the last is a main meter in front of the rest


MAIN_LOSSES = 0.01  # the simulated feeder's losses between the main meter and the others


DEMO_COUNTER_ADDRESS = {"units_a": 41, "units_b": 43}


DEMO_PRODUCTS = {0: {"units_a": "cell-a", "units_b": "cell-b"}, 1: {"units_a": "module-x"}}


# the OPC UA line: a simulated plant's line (simulators/opcua_plant.py) read by subscription
OPCUA_METER = "P1"


OPCUA_LINE = LineSpec("Line1", kw=24.0, units_per_min=90.0, product="pack-z")


def opcua_meter(port: int, cal_date: date) -> dict[str, Any]:
    """The demo's OPC UA meter on line 3: energy, the units it made and the product code and
    production order it made them under, by subscription."""
    return {
        "id": OPCUA_METER,
        "serial": "SIM-OPC-00001",
        "model": "tanji simulated plant meter (not a real product)",
        "carrier": "electricity",
        "accuracy_class": "1",
        "line": "line-3",
        "rated_power_kw": Decimal("60"),  # the plant's Line1 draws 42 kW
        "protocol": "opcua",
        "calibration": _certificate(90, cal_date),
        "connection": {
            "endpoint": f"opc.tcp://127.0.0.1:{port}/tanji/plant",
            "poll_interval_s": 1.0,
            "timeout_s": 2.0,
        },
        "points": [
            {
                "quantity": "active_energy_import",
                "kind": "counter",
                "unit": "kWh",
                "node": node_id(f"{OPCUA_LINE.name}.Meter.ActiveEnergyImport"),
            },
            {
                "quantity": "active_power",
                "kind": "gauge",
                "unit": "kW",
                "node": node_id(f"{OPCUA_LINE.name}.Meter.ActivePower"),
            },
            {
                "name": "units",
                "quantity": "production_count",
                "kind": "counter",
                "unit": "unit",
                "node": node_id(f"{OPCUA_LINE.name}.Production.UnitsProduced"),
                "data_type": "integer",
                "product": OPCUA_LINE.product,
                "max_rate_per_h": Decimal(60 * OPCUA_LINE.units_per_min * 2),  # twice its pace
            },
            {
                "quantity": "product_code",
                "node": node_id(f"{OPCUA_LINE.name}.Production.ProductCode"),
            },
            {
                "quantity": "production_order",
                "node": node_id(f"{OPCUA_LINE.name}.Production.ProductionOrder"),
            },
        ],
    }


def demo_meter_id(index: int) -> str:
    """Site meter id of the fleet's meter `index`."""
    return f"M{index + 1}"


def _certificate(i: int, cal_date: date) -> dict[str, Any]:
    """A demo meter's (simulated) verification certificate, as site.toml holds it."""
    return {
        "certificate_no": f"DEMO-CAL-{i + 1:04d}",
        "kind": "verification",
        "lab": "demo calibration lab (simulated, not a real certificate)",
        "accreditation_no": "CNAS L0000 (simulated)",
        "calibration_date": cal_date,
        "due_date": cal_date + timedelta(days=365),
        "reference_standard": "three-phase electric energy standard (simulated)",
        "reference_standard_certificate": DEMO_STANDARD.certificate_no,
        "reference_standard_lab": DEMO_STANDARD.lab,
    }


def modbus_meter(i: int, meters: int, base_port: int, today: date) -> dict[str, Any]:
    """The demo's Modbus meter `i` of `meters` (the fleet's meter on port base_port + i).

    M1 and M2 feed one line each, with the line's production counters (two products on line
    1); M3 serves both lines, half each; the main meter (from MAIN_FROM meters on, the last)
    serves no line: it is there for the energy balance. M1 was calibrated 120 days ago, M3's
    certificate expired; M2's is a DCC (demo_chain.import_demo_dcc)."""
    main = i == meters - 1 and meters >= MAIN_FROM
    cal_date = today - timedelta(days=500 if i == 2 else 120)
    where: dict[str, Any] = (
        {}
        if main
        else {"lines": {"line-1": Decimal("0.5"), "line-2": Decimal("0.5")}}
        if i == 2
        else {"line": f"line-{i % 2 + 1}"}
    )
    points = [_production_point(i, r, p) for r, p in DEMO_PRODUCTS.get(i, {}).items()]
    return {
        "id": demo_meter_id(i),
        "serial": f"SIM-{i + 1:05d}",
        "model": "tanji simulated meter (not a real product)",
        "carrier": "electricity",
        "accuracy_class": "0.5S" if main else "1",
        # steps faster than 1.2 x this are implausible (gateway/activity/counters.py)
        "rated_power_kw": Decimal(
            str(
                sum(rated_kw(k) for k in range(meters - 1)) * (1 + MAIN_LOSSES)
                if main
                else rated_kw(i)
            )
        ),
        **where,
        "protocol": "modbus_tcp",
        **({} if i == DCC_METER else {"calibration": _certificate(i, cal_date)}),
        "connection": {
            "host": "127.0.0.1",
            "port": base_port + i,
            "poll_interval_s": 1.0,
            "timeout_s": 1.0,
        },
        "profile": "tanji-sim",  # default points: active_energy_import, active_power
        **({"points": points} if points else {}),
    }


def _production_point(i: int, register: str, product: str) -> dict[str, Any]:
    """A production counter of the demo's Modbus meter `i` (the tanji-sim map's)."""
    return {
        "name": register,
        "quantity": "production_count",
        "kind": "counter",
        "unit": "unit",
        "address": DEMO_COUNTER_ADDRESS[register],
        "data_type": "uint32",
        "product": product,
        # the simulated line makes up to rated_kw / 100 units a second
        "max_rate_per_h": Decimal(str(rated_kw(i) * 36 * 2)),
    }


def demo_site(
    workdir: Path,
    meters: int,
    base_port: int,
    broker_port: int,
    interval_s: int,
    mqtt_protocol: str = "5",
    mqtt_extra: dict[str, Any] | None = None,
    opcua_port: int | None = None,
    https: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's site configuration, as a site.toml would hold it (plaintext MQTT: the
    demo's broker listens on 127.0.0.1 only). `mqtt_extra` adds to `[mqtt]`; delivery
    settings in it (`ack_timeout_s`, `batch_size`, ...) go to `[delivery]`. With `https` (the
    `[https]` section) the gateway delivers over HTTPS instead (`[platform] transport`)."""
    extra = mqtt_extra or {}
    today = date.today()
    main = meters - 1 if meters >= MAIN_FROM else None
    site_meters = [modbus_meter(i, meters, base_port, today) for i in range(meters)]
    if opcua_port is not None:
        site_meters.append(opcua_meter(opcua_port, today - timedelta(days=60)))
    return {
        "enterprise": {"name": "Demo Factory (simulated)", "uscc": DEMO_USCC},
        "gateway_id": "demo-gw",
        "meters": site_meters,
        "store": {"path": str(workdir / "gateway.db"), "commit_interval_s": 1.0},
        "aggregation": {"interval": f"{interval_s}s", "grace_s": 2.0},
        **(
            {
                "mqtt": {
                    "broker_url": f"mqtt://127.0.0.1:{broker_port}",
                    "protocol": mqtt_protocol,
                    **{k: v for k, v in extra.items() if k not in LEGACY_POLICY_KEYS},
                }
            }
            if https is None
            else {"platform": {"transport": "https"}, "https": https}
        ),
        # delivery settings given with the link's (as older sites did) go where they belong
        "delivery": {"ack_timeout_s": 10.0} | legacy_policy(extra),
        "balances": (
            [{"main": demo_meter_id(main), "subs": [demo_meter_id(i) for i in range(main)]}]
            if main is not None
            else []
        ),
    }


def write_site(workdir: Path, site: dict[str, Any]) -> SiteConfig:
    """Validate a demo site (`demo_site`) and write it as site.toml (for check-config and
    `tanji run`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = parse_site_config(site, "demo site")
    (workdir / "site.toml").write_text(tomli_w.dumps(site), encoding="utf-8")
    return config
