"""What a site may do but should hear about: `tanji check-config` prints it as a note and
`tanji run` logs the same at its start (a service's log is all an operator may see)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from gateway.cli import app
from gateway.config import parse_site_config, site_notes

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"
UNUSED_HTTPS = '[https] is given but not used: [platform] transport is "mqtt"'


def example(tmp_path: Path) -> dict[str, Any]:
    data = tomllib.loads(EXAMPLE.read_text())
    data["store"]["path"] = str(tmp_path / "tanji.db")
    return data


def test_an_https_section_the_transport_does_not_use_is_noted(tmp_path: Path):
    data = example(tmp_path)
    data["https"] = {"url": "https://127.0.0.1:8443"}
    assert any(n.startswith(UNUSED_HTTPS) for n in site_notes(parse_site_config(data)))
    data["platform"]["transport"] = "https"
    assert not any(n.startswith(UNUSED_HTTPS) for n in site_notes(parse_site_config(data)))


NO_CLIENT_CERTIFICATE = "[https] cert_file and key_file are not set: the gateway presents no"


def test_https_without_a_client_certificate_is_allowed_and_noted_off_this_machine(
    tmp_path: Path,
):
    """Mutual TLS is the platform's to require: a gateway without a client certificate is a
    valid site (a note, not an error) when the platform is elsewhere; on this machine there
    is nothing to say. The section itself is required, and the error says what it needs."""
    from gateway.config import ConfigError

    data = example(tmp_path)
    data["platform"]["transport"] = "https"
    with pytest.raises(ConfigError) as refused:
        parse_site_config(data)
    (problem,) = refused.value.problems
    assert "needs an [https] section with the platform's url" in str(problem)
    assert "cert_file and key_file when the platform requires a client certificate" in str(problem)
    key = tmp_path / "platform-ack.pub.pem"
    data["https"] = {"url": "https://platform.example.cn:8443", "platform_ack_key": str(key)}
    config = parse_site_config(data)
    assert any(n.startswith(NO_CLIENT_CERTIFICATE) for n in site_notes(config)), site_notes(config)
    data["https"] |= {"cert_file": "gw.pem", "key_file": "gw.key"}
    assert not any(n.startswith(NO_CLIENT_CERTIFICATE) for n in site_notes(parse_site_config(data)))
    data["https"] = {"url": "https://127.0.0.1:8443"}
    assert not any(n.startswith(NO_CLIENT_CERTIFICATE) for n in site_notes(parse_site_config(data)))


def test_check_config_prints_the_notes_and_run_logs_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    data = example(tmp_path)
    data["https"] = {"url": "https://127.0.0.1:8443"}
    del data["delivery"]
    data["mqtt"]["batch_size"] = 7  # an older site file's delivery setting
    site = tmp_path / "site.toml"
    site.write_bytes(tomli_w.dumps(data).encode())
    checked = CliRunner().invoke(app, ["check-config", str(site)])
    assert checked.exit_code == 0, checked.output
    text = " ".join(checked.output.split())
    assert f"note: {UNUSED_HTTPS}" in text
    assert "note: [mqtt] batch_size: delivery settings, now in [delivery]" in text
    # the run stops at once (this test holds the store's lock) after logging the notes
    from gateway.store.lock import StoreLock

    lock = StoreLock.acquire(tmp_path / "tanji.db")
    try:
        ran = CliRunner().invoke(app, ["run", "-c", str(site)])
    finally:
        lock.release()
    assert ran.exit_code == 2  # another gateway holds the store
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "tanji")
    assert f"{site}: {UNUSED_HTTPS}" in logged
    assert "[mqtt] batch_size: delivery settings, now in [delivery]" in logged
