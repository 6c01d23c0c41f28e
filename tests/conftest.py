"""Shared fixtures: a real Mosquitto broker on a free loopback port, restartable."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from simulators.pki import CertificateAuthority, Issued

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


@dataclass
class BrokerTls:
    """Mosquitto's TLS listener: the CA it trusts for client certificates, its own
    certificate, and whether a client certificate is required (mutual TLS)."""

    ca: Path
    server: Issued
    require_certificate: bool = True


class Mosquitto:
    """A real mosquitto process with persistence, stoppable and restartable on one port;
    optionally TLS only (`tls`) and with password logins (`users`)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        tls: BrokerTls | None = None,
        users: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.extra = extra  # more mosquitto.conf lines
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.tls = tls
        self.users = users
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _configure(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.workdir}/mosquitto.log",
            "log_type all",
            *self.extra,
        ]
        if os.geteuid() == 0:
            # as root mosquitto would switch to user `mosquitto`, who cannot read the test's
            # private temp dir (certificates, persistence, log)
            lines.append("user root")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server.cert}",
                f"keyfile {self.tls.server.key}",
                "tls_version tlsv1.2",
                f"require_certificate {str(self.tls.require_certificate).lower()}",
            ]
        if self.users:
            passwords = self.workdir / "passwords"
            passwords.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    [
                        _sibling(self.binary, "mosquitto_passwd"),
                        "-b",
                        str(passwords),
                        user,
                        password,
                    ],
                    check=True,
                )
            lines += [f"password_file {passwords}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._configure()
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

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _sibling(binary: str, name: str) -> str:
    found = shutil.which(name) or str(Path(binary).with_name(name))
    return found


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


@dataclass
class TlsBroker:
    """A TLS-only Mosquitto that requires client certificates, and the PKI around it."""

    broker: Mosquitto
    ca: CertificateAuthority
    gateway: Issued  # client certificate of the gateway
    platform: Issued  # client certificate of the platform simulator


@pytest.fixture
def pki(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki")


@pytest.fixture
def tls_mosquitto(tmp_path: Path, pki: CertificateAuthority) -> Iterator[TlsBroker]:
    tls = BrokerTls(pki.cert_path, pki.issue("broker", server=True))
    broker = Mosquitto(require("mosquitto", _mosquitto_binary()), tmp_path / "broker", tls=tls)
    broker.start()
    try:
        yield TlsBroker(
            broker, pki, pki.issue("gateway", server=False), pki.issue("platform", server=False)
        )
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


def _postgres_bindir() -> Path | None:
    """Debian's postgresql package keeps the server binaries off PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    return candidates[-1].parent if candidates else None


class Postgres:
    """A throwaway PostgreSQL server (Debian's postgresql) in a temp dir on a free port, trust
    authentication on 127.0.0.1 only. As root it runs as the `postgres` user, which the
    package creates: PostgreSQL refuses to run as root."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="tanji-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, *args], check=True, capture_output=True, cwd=self.workdir, timeout=120
        )

    def start(self) -> None:
        data = self.workdir / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.workdir} -c fsync=on"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.workdir / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "data"), "-m", "immediate",
                "stop",
            )  # fmt: skip
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    bindir = _postgres_bindir()
    require("postgresql (server)", str(bindir) if bindir else None)
    assert bindir is not None
    server = Postgres(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
