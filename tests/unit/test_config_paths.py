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
