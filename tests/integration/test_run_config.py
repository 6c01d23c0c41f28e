"""`tanji run` as a real process refuses to start, exit 2, on what `tanji check-config` calls an
error (a missing CA file, an unset password variable, a store path it cannot write), with the
same messages; and warns at start when a password goes over plain mqtt:// by permission."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import Proc, wait_until

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"
PLAIN = 'broker_url = "mqtt://127.0.0.1:1883"'
UNSET = "TANJI_TEST_PASSWORD_NOBODY_SETS"


def site(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "site.toml"
    path.write_text(text.replace(old, new))
    return path


def tanji(*args: str) -> subprocess.CompletedProcess[str]:
    """A real `tanji` process; one that has not ended after 60 s fails the test."""
    env = {k: v for k, v in os.environ.items() if k != UNSET}
    try:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"tanji {' '.join(args)} kept running on a configuration check-config refuses")


CASES = {
    "missing CA file": (
        PLAIN,
        'broker_url = "mqtts://127.0.0.1:8883"\nca_file = "{tmp}/absent-ca.pem"',
        "mqtt: ca_file {tmp}/absent-ca.pem: No such file or directory",
    ),
    "unset password variable": (
        PLAIN,
        f'{PLAIN}\nusername = "gw"\npassword_env = "{UNSET}"',
        f"mqtt: environment variable {UNSET} is not set",
    ),
    "store path is a folder": (
        'path = "tanji.db"',
        'path = "{tmp}"',
        "store.path: {tmp} is a folder",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_run_exits_2_on_what_check_config_calls_an_error(tmp_path: Path, case: str):
    old, new, expected = (s.format(tmp=tmp_path) for s in CASES[case])
    config = site(tmp_path, old, new)
    checked = tanji("check-config", str(config))
    ran = tanji("run", "-c", str(config))
    assert checked.returncode == 2, checked.stderr
    assert ran.returncode == 2, ran.stderr
    assert expected in checked.stderr
    assert expected in ran.stderr
    assert "Traceback" not in ran.stderr
    assert "running" not in ran.stderr  # it never started
    assert not (tmp_path / "tanji.db").exists()


def platform_key(tmp_path: Path) -> Path:
    """A platform's ack-verification key (needed with a broker not on this machine)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    path = tmp_path / "platform-ack.pem"
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_run_warns_when_a_password_goes_in_clear_by_permission(tmp_path: Path):
    # 0.0.0.0 is not a loopback address, yet a connection to it stays on this machine
    config = site(
        tmp_path,
        PLAIN,
        'broker_url = "mqtt://0.0.0.0:1"\nusername = "gw"\npassword_env = "TANJI_TEST_PW"\n'
        f'allow_plaintext_password = true\nplatform_ack_key = "{platform_key(tmp_path)}"',
    )
    gateway = Proc(["run", "-c", str(config)], tmp_path / "run.log", env={"TANJI_TEST_PW": "pw"})
    gateway.start()
    try:
        wait_until(lambda: "running" in gateway.output(), 60, "the gateway to start")
    finally:
        gateway.interrupt()
    log = gateway.output()
    assert "mqtt: the password goes in clear over mqtt:// to 0.0.0.0" in log, log
