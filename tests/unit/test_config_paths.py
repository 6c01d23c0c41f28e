"""Files a site.toml names are relative to its folder, wherever the command starts: a
service manager starts `tanji run` in /, and check-config from the shell must agree with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from collectors.opcua import create_application_certificate
from gateway.config import check_site

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"
POINT = {"quantity": "active_energy_import", "kind": "counter", "unit": "kWh"}


def test_relative_files_are_found_beside_the_site_file_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "etc" / "tanji"
    create_application_certificate(folder / "pki", "gw")
    (folder / "trusted").mkdir()
    example = tomllib.loads(EXAMPLE.read_text())
    meter = {
        k: v
        for k, v in example["meters"][0].items()
        if k not in ("connection", "profile", "profile_points", "points")
    }
    connection = {
        "endpoint": "opc.tcp://127.0.0.1:4840/p",
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": "pki/tanji-gateway.der",
        "private_key": "pki/tanji-gateway.key.pem",
        "trust_dir": "trusted",
    }
    data = {**example, "store": {"path": "data/tanji.db"}}
    data["meters"] = [
        {
            **meter,
            "protocol": "opcua",
            "connection": connection,
            "points": [{**POINT, "node": "nsu=urn:x;s=E"}],
        }
    ]
    (folder / "site.toml").write_text(tomli_w.dumps(data))
    monkeypatch.chdir(tmp_path)  # anywhere but the site's folder
    config = check_site(Path("etc/tanji/site.toml"))  # no problem: every file is found
    assert config.store.path == Path("etc/tanji/data/tanji.db")
    opcua = config.meters[0].connection
    assert opcua.certificate == "etc/tanji/pki/tanji-gateway.der"  # type: ignore[union-attr]
    assert opcua.trust_dir == "etc/tanji/trusted"  # type: ignore[union-attr]
    absolute = {**connection, "trust_dir": str(folder / "trusted")}
    data["meters"][0]["connection"] = absolute
    (folder / "site.toml").write_text(tomli_w.dumps(data))
    assert check_site(folder / "site.toml").meters[0].connection.trust_dir == str(  # type: ignore[union-attr]
        folder / "trusted"
    )  # an absolute path stays as written


def test_the_platform_links_files_are_relative_to_the_site_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from gateway.config import load_site_config

    data = tomllib.loads(EXAMPLE.read_text())
    data["mqtt"] |= {
        "broker_url": "mqtts://127.0.0.1:8883",
        "ca_file": "pki/ca.pem",
        "platform_ack_key": "platform-ack.pub.pem",
        "username": "gw",
        "password_file": "mqtt-password",
    }
    data["https"] = {
        "url": "https://127.0.0.1:8443",
        "cert_file": "pki/gw.pem",
        "key_file": "pki/gw.key",
    }
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "site.toml").write_text(tomli_w.dumps(data))
    monkeypatch.chdir(tmp_path)
    config = load_site_config(Path("site/site.toml"))
    assert config.mqtt.ca_file == Path("site/pki/ca.pem")
    assert config.mqtt.platform_ack_key == Path("site/platform-ack.pub.pem")
    assert config.mqtt.password_file == Path("site/mqtt-password")
    assert config.https is not None
    assert (config.https.cert_file, config.https.key_file) == (
        Path("site/pki/gw.pem"),
        Path("site/pki/gw.key"),
    )
