"""OPC UA security against the simulated plant: every secure policy and mode with a username,
a user certificate, an untrusted server certificate refused by its thumbprint, a wrong
password, and `tanji keys opcua`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from collectors.opcua import OpcUaCollector, OpcUaDevice
from collectors.opcua.security import (
    ApplicationCertificate,
    create_application_certificate,
    load_certificate,
    thumbprint,
)
from gateway.cli import app
from gateway.models import QualityStatus
from simulators.opcua_plant import PlantSecurity, PlantServer
from tests.conftest import free_port
from tests.integration.test_opcua_collector import ENERGY, clock, collect


def secured(port: int, gateway: ApplicationCertificate, trust: Path, **conn: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {
            "connection": {
                "endpoint": f"opc.tcp://127.0.0.1:{port}/tanji/plant",
                "poll_interval_s": 0.5,
                "timeout_s": 3.0,
                "backoff_initial_s": 0.2,
                "backoff_max_s": 1.0,
                "certificate": str(gateway.certificate),
                "private_key": str(gateway.private_key),
                "trust_dir": str(trust),
                **conn,
            },
            "points": [ENERGY],
        }
    )


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    gateway = create_application_certificate(tmp_path / "gw", "urn:tanji:gateway:test")
    user = create_application_certificate(tmp_path / "user", "urn:tanji:user:test", "operator")
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "bad-pw").write_text("guess\n")
    return {"gateway": gateway, "user": user, "trust": tmp_path / "trust"}


def plant_security(tmp_path: Path, user: ApplicationCertificate) -> PlantSecurity:
    return PlantSecurity(
        tmp_path / "plant",
        users=(("operator", "s3cret"),),
        user_certificates=(user.certificate,),
    )


async def test_every_policy_and_mode_with_username_and_user_certificate(
    tmp_path: Path, keys: dict[str, Any]
):
    port = free_port()
    async with PlantServer(port=port, security=plant_security(tmp_path, keys["user"])) as plant:
        assert plant.certificate is not None
        keys["trust"].mkdir()
        shutil.copy(plant.certificate, keys["trust"])  # the engineer trusts this server
        for policy in ("Basic256Sha256", "Aes256_Sha256_RsaPss"):
            for mode in ("Sign", "SignAndEncrypt"):
                device = secured(
                    port,
                    keys["gateway"],
                    keys["trust"],
                    security_policy=policy,
                    security_mode=mode,
                    username="operator",
                    password_file=str(tmp_path / "pw"),
                )
                readings = await collect(OpcUaCollector("P1", device, clock), 1.5)
                good = [r for r in readings if r.quality.status is QualityStatus.GOOD]
                assert good, (policy, mode, readings[:2])
        by_certificate = secured(
            port,
            keys["gateway"],
            keys["trust"],
            security_policy="Basic256Sha256",
            security_mode="SignAndEncrypt",
            user_certificate=str(keys["user"].certificate),
            user_private_key=str(keys["user"].private_key),
        )
        readings = await collect(OpcUaCollector("P1", by_certificate, clock), 1.5)
        assert any(r.quality.status is QualityStatus.GOOD for r in readings), readings[:2]


async def test_an_untrusted_server_and_a_wrong_password_are_refused_with_reasons(
    tmp_path: Path, keys: dict[str, Any], caplog: pytest.LogCaptureFixture
):
    port = free_port()
    keys["trust"].mkdir()  # empty: this server is not trusted yet
    async with PlantServer(port=port, security=plant_security(tmp_path, keys["user"])) as plant:
        assert plant.certificate is not None
        device = secured(
            port,
            keys["gateway"],
            keys["trust"],
            security_policy="Basic256Sha256",
            security_mode="SignAndEncrypt",
            username="operator",
            password_file=str(tmp_path / "pw"),
        )
        with caplog.at_level(logging.ERROR, logger="collectors.opcua.collector"):
            readings = await collect(OpcUaCollector("P1", device, clock), 1.5)
        assert readings
        assert {r.quality.reason for r in readings} == {"untrusted-server-certificate"}
        expected = thumbprint(load_certificate(plant.certificate))
        assert expected in caplog.text  # the engineer sees which certificate to check
        shutil.copy(plant.certificate, keys["trust"])
        wrong = device.model_copy(
            update={
                "connection": device.connection.model_copy(
                    update={"password_file": str(tmp_path / "bad-pw")}
                )
            }
        )
        readings = await collect(OpcUaCollector("P1", wrong, clock), 1.5)
        reasons = {r.quality.reason for r in readings}
        assert reasons
        assert all(r.value is None for r in readings)
        assert reasons <= {"BadUserAccessDenied", "BadIdentityTokenRejected"}, reasons


def test_keys_command_writes_a_certificate_and_says_its_thumbprint(tmp_path: Path):
    result = CliRunner().invoke(
        app, ["keys", "opcua", "--out", str(tmp_path / "pki"), "--gateway-id", "gw-7"]
    )
    assert result.exit_code == 0, result.output
    cert = load_certificate(tmp_path / "pki" / "tanji-gateway.der")
    assert thumbprint(cert) in result.output
    assert "urn:tanji:gateway:gw-7" in result.output
    assert (tmp_path / "pki" / "tanji-gateway.key.pem").stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(
        app, ["keys", "opcua", "--out", str(tmp_path / "pki"), "--gateway-id", "gw-7"]
    )
    assert again.exit_code == 2  # never overwrites a key silently
    assert "already" in again.output


async def test_discover_lists_energy_and_production_and_its_fragment_loads(tmp_path: Path):
    import asyncio
    import tomllib

    from gateway.config import parse_site_config

    port = free_port()
    async with PlantServer(port=port, filler_namespaces=2):
        result = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["discover", "opcua", f"opc.tcp://127.0.0.1:{port}/tanji/plant"],
        )
    assert result.exit_code == 0, result.output
    fragment = result.stdout
    assert 'node = "nsu=urn:tanji:sim:plant;s=Line1.Meter.ActiveEnergyImport"' in fragment
    assert 'quantity = "production_count"' in fragment
    assert "ns=" not in fragment.replace("nsu=", "")  # never an index
    completed = tomllib.loads(fragment.replace('"CHANGE-ME"', '"X1"'))
    site = parse_site_config(
        {"enterprise": {"name": "t", "uscc": "91350100M000100Y43"}, "gateway_id": "gw", **completed}
    )
    # 2 lines x (energy, power, units, product code, production order)
    assert len(site.meters[0].points) == 10
    labels = {(p.name, p.quantity) for p in site.meters[0].points if p.kind == "label"}
    assert ("line1.production.productcode", "product_code") in labels
    assert ("line2.production.productionorder", "production_order") in labels


def test_sim_opcua_options_are_checked(tmp_path: Path):
    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["sim", "opcua", *args])
        return result.exit_code, result.output

    assert run("--user", "operator") == (
        2,
        "--user and --password-file go together\nusers need a secured server: give --pki DIR\n",
    )
    (tmp_path / "not-a-cert").write_text("hello")
    code, out = run("--pki", str(tmp_path), "--user-certificate", str(tmp_path / "not-a-cert"))
    assert code == 2
    assert "not a certificate" in out
