"""Shared fixtures: a real Mosquitto broker on a free loopback port, restartable."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO_PATHS = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A real mosquitto process with persistence, stoppable and restartable on one port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)])
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def _mosquitto_binary() -> str | None:
    for candidate in MOSQUITTO_PATHS:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require(name: str, binary: str | None) -> str:
    """A Debian-packaged server the tests need: missing is a failure in CI, a skip elsewhere."""
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; `make test` installs it (apt-get)")
        pytest.skip(f"{name} not installed (run `make test` to install it)")
    return binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(require("mosquitto", _mosquitto_binary()), tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class VictoriaMetrics:
    """Debian's victoria-metrics (it accepts the InfluxDB v2 write API) in a temp dir."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"-storageDataPath={self.workdir}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-loggerLevel=ERROR",
                "-retentionPeriod=100y",  # the default (1 month) drops the tests' old timestamps
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    binary = require("victoria-metrics", shutil.which("victoria-metrics"))
    server = VictoriaMetrics(binary, tmp_path / "vm")
    server.start()
    try:
        yield server
    finally:
        server.stop()
