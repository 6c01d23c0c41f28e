"""Modbus TCP requests per second on one connection: Python clients vs libmodbus' C client.

Builds a C reference server and client from Debian's libmodbus (bench/modbus_c/build.sh),
starts the server on a free 127.0.0.1 port and, in the same run, measures on one TCP
connection each, one request outstanding at a time, reading COUNT holding registers
(function 0x03) and checking every value:

- ``c_libmodbus``: libmodbus' own client (bench/modbus_c/client.c), the reference;
- ``pymodbus``: ``AsyncModbusTcpClient.read_holding_registers`` (tanji's RTU transports use it);
- ``minimal_asyncio``: ``MiniModbusTcp`` below, a hand-written asyncio.Protocol client;
- ``tanji``: the gateway's own path (``collectors.modbus.link.ModbusLink`` under its lock).

Optionally (``--pipeline K``, K > 1) the minimal client with K requests in flight: reported
under ``not_comparable`` because the C client never has more than one outstanding.

``--pin`` places the processes: ``split`` (default) runs the server on CPU 0 and the clients
on CPU 1, so every round trip pays two cross-CPU wake-ups, as with a server elsewhere;
``same`` puts all on CPU 0, which makes the figure client + server CPU time per request;
``none`` leaves it to the scheduler (noisy on a 2-vCPU VM). ``--loop uvloop`` needs uvloop,
the event loop every ``tanji`` command runs on (``--loop asyncio`` for the default loop).

Rounds are interleaved (C, pymodbus, minimal[, pipelined]) and each figure is the median of
``--runs`` runs. ``cpu_us_per_request`` is the client process's CPU time (time.process_time
for Python) per request. Prints one JSON object.

Run from the repository root: .venv/bin/python -m bench.modbus_rps [--seconds 3] [--count 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

NB_REGS = 10_000  # registers 0..9999 served by bench/modbus_c/server.c
WARMUP = 200  # untimed requests on each connection, as in client.c
HOST = "127.0.0.1"
C_DIR = Path(__file__).resolve().parent / "modbus_c"


def expected_value(address: int) -> int:
    """What server.c holds at ``address`` (holding and input registers alike)."""
    return (address * 31 + 7) & 0xFFFF


EXPECTED = [expected_value(a) for a in range(NB_REGS)]


def request_address(i: int, count: int) -> int:
    """Start address of request ``i``, as in client.c."""
    return (i * 37) % (NB_REGS - count)


class ModbusError(Exception):
    pass


class MiniModbusTcp(asyncio.Protocol):
    """Minimal Modbus TCP client: MBAP framing, function 0x03, transaction ids checked.

    Any number of requests may be outstanding; each awaits a future that data_received
    resolves by transaction id. An unknown id or a malformed frame drops the connection.
    """

    _MBAP = struct.Struct(">HHH")
    _READ = struct.Struct(">HHHBBHH")

    def __init__(self, timeout: float = 3.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._buf = b""
        self._tid = 0
        self._lost: BaseException | None = None

    @classmethod
    async def connect(cls, host: str, port: int, request_timeout: float = 3.0) -> MiniModbusTcp:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(request_timeout), host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed")
        self._fail_all(self._lost)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def _protocol_error(self, why: str) -> None:
        self._fail_all(ModbusError(why))
        self.close()

    def data_received(self, data: bytes) -> None:
        if self._buf:
            data = self._buf + data
        pos, end_of_data = 0, len(data)
        while end_of_data - pos >= 8:  # MBAP (7) + function code
            tid, proto, length = self._MBAP.unpack_from(data, pos)
            end = pos + 6 + length
            if end > end_of_data:
                break
            fut = self._pending.pop(tid, None)
            if fut is None or proto != 0 or length < 2:
                self._protocol_error(f"unexpected frame: tid={tid} proto={proto} len={length}")
                return
            if not fut.done():
                fut.set_result(data[pos + 6 : end])  # unit id + PDU
            pos = end
        self._buf = data[pos:]

    def _expire(self, tid: int) -> None:
        fut = self._pending.get(tid)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"no response to transaction {tid}"))

    async def read_holding_registers(self, address: int, count: int, unit: int = 1) -> list[int]:
        if self._lost is not None:
            raise ConnectionError("not connected") from self._lost
        assert self._transport is not None
        tid = self._tid = self._tid % 0xFFFF + 1
        fut = self._loop.create_future()
        self._pending[tid] = fut
        timer = self._loop.call_later(self._timeout, self._expire, tid)
        self._transport.write(self._READ.pack(tid, 0, 6, unit, 3, address, count))
        try:
            frame = await fut
        finally:
            timer.cancel()
            self._pending.pop(tid, None)
        if frame[0] != unit:
            raise ModbusError(f"unit id {frame[0]} != {unit}")
        if frame[1] == 0x83:
            raise ModbusError(f"exception code {frame[2] if len(frame) > 2 else '?'}")
        if frame[1] != 3 or len(frame) != 3 + 2 * count or frame[2] != 2 * count:
            raise ModbusError(f"bad response to read of {count} registers: {frame.hex()}")
        return list(struct.unpack_from(f">{count}H", frame, 3))


def check(address: int, count: int, registers: list[int]) -> None:
    if registers != EXPECTED[address : address + count]:
        raise ModbusError(f"wrong values at {address}: {registers}")


async def timed(
    read: Callable[[int], Awaitable[None]], requests: int, seconds: float, workers: int = 1
) -> dict[str, float]:
    """Run ``read(i)`` with ``workers`` in flight until ``requests`` (0: no cap) or ``seconds``."""
    for i in range(WARMUP):
        await read(i)
    deadline = time.perf_counter() + seconds if seconds > 0 else float("inf")
    done = 0
    issued = 0

    async def worker() -> None:
        nonlocal done, issued
        while requests == 0 or issued < requests:
            i = issued
            issued += 1
            await read(i)
            done += 1
            if done & 255 == 0 and time.perf_counter() >= deadline:
                issued = requests if requests else 1 << 62  # stops every worker
                return

    t0, c0 = time.perf_counter(), time.process_time()
    if workers == 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(workers)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "requests": done,
        "seconds": round(wall, 6),
        "rps": round(done / wall, 1),
        "cpu_us_per_request": round(cpu * 1e6 / done, 3),
    }


async def run_pymodbus(port: int, count: int, requests: int, seconds: float) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient(HOST, port=port, timeout=3, retries=0, reconnect_delay=0)
    if not await client.connect():
        raise ConnectionError(f"pymodbus could not connect to {HOST}:{port}")

    async def read(i: int) -> None:
        address = request_address(i, count)
        rr = await client.read_holding_registers(address, count=count, device_id=1)
        if rr.isError():
            raise ModbusError(f"pymodbus: {rr}")
        check(address, count, rr.registers)

    try:
        return await timed(read, requests, seconds)
    finally:
        client.close()


async def run_tanji(port: int, count: int, requests: int, seconds: float) -> dict[str, float]:
    """The gateway's own request path: a ModbusLink under its lock, as the collector uses it."""
    from collectors.modbus.config import ModbusTcpConnection
    from collectors.modbus.link import ModbusLink

    link = ModbusLink(ModbusTcpConnection(host=HOST, port=port, timeout_s=3.0))

    async def read(i: int) -> None:
        address = request_address(i, count)
        async with link.lock:
            data = await link.read(1, 3, address, count, 3.0)  # register bytes, as on the wire
            check(address, count, list(struct.unpack(f">{count}H", data)))

    try:
        return await timed(read, requests, seconds)
    finally:
        link.close()


async def run_minimal(
    port: int, count: int, requests: int, seconds: float, workers: int = 1
) -> dict[str, float]:
    client = await MiniModbusTcp.connect(HOST, port)

    async def read(i: int) -> None:
        address = request_address(i, count)
        check(address, count, await client.read_holding_registers(address, count))

    try:
        return await timed(read, requests, seconds, workers)
    finally:
        client.close()


def run_c(client: Path, port: int, count: int, requests: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [str(client), str(port), str(requests), str(count), str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    return json.loads(out.stdout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def build() -> Path:
    out = subprocess.run(
        ["bash", str(C_DIR / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "cpu_us_per_request": round(statistics.median(r["cpu_us_per_request"] for r in runs), 2),
        "rps_runs": [r["rps"] for r in runs],
        "requests_runs": [r["requests"] for r in runs],
    }


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


# --pin: (server CPUs, client CPUs). Across two vCPUs each round trip pays two cross-CPU
# wake-ups; on one CPU it pays two context switches and client + server CPU time add up.
PLACEMENTS: dict[str, tuple[set[int], set[int]]] = {
    "split": ({0}, {1}),
    "same": ({0}, {0}),
    "none": (set(), set()),
}


def run_in_loop(
    coro: Coroutine[Any, Any, dict[str, float]],
    factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> dict[str, float]:
    with asyncio.Runner(loop_factory=factory) as runner:  # asyncio.run() has no factory in 3.11
        return runner.run(coro)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.modbus_rps", description=__doc__)
    ap.add_argument("--requests", type=int, default=0, help="cap per run (0: none)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per run (0: none)")
    ap.add_argument("--count", type=int, default=10, help="registers per request (1..125)")
    ap.add_argument("--runs", type=int, default=3, help="runs per variant; median reported")
    ap.add_argument("--pipeline", type=int, default=8, help="K in flight for the extra run")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    ap.add_argument(
        "--pin",
        choices=["split", "same", "none"],
        default="split",
        help="CPU placement: server on CPU 0 and clients on CPU 1 (split), all on CPU 0 (same)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.count <= 125 or args.runs < 1 or (args.requests <= 0 and args.seconds <= 0):
        ap.error("need 1 <= --count <= 125, --runs >= 1, and --requests or --seconds > 0")

    bin_dir = build()
    factory = loop_factory(args.loop)
    port = free_port()
    server_cpus, client_cpus = PLACEMENTS[args.pin]
    server = subprocess.Popen(
        [str(bin_dir / "server"), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        if server_cpus:
            os.sched_setaffinity(server.pid, server_cpus)
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)  # this process and the C client it starts
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("C server did not start")
        n, s, c = args.requests, args.seconds, args.count
        variants: dict[str, Callable[[], dict[str, float]]] = {
            "c_libmodbus": lambda: run_c(bin_dir / "client", port, c, n, s),
            "pymodbus": lambda: run_in_loop(run_pymodbus(port, c, n, s), factory),
            "minimal_asyncio": lambda: run_in_loop(run_minimal(port, c, n, s), factory),
            "tanji": lambda: run_in_loop(run_tanji(port, c, n, s), factory),
        }
        pipelined = f"minimal_asyncio_pipelined_k{args.pipeline}"
        if args.pipeline > 1:
            variants[pipelined] = lambda: run_in_loop(
                run_minimal(port, c, n, s, args.pipeline), factory
            )
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, run in variants.items():
                runs[name].append(run())
                if server.poll() is not None:
                    raise RuntimeError(f"C server exited with {server.returncode}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    results = {name: summarize(r) for name, r in runs.items()}
    c_rps = results["c_libmodbus"]["rps"]
    for r in results.values():
        r["ratio_to_c"] = round(r["rps"] / c_rps, 3)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "loop": args.loop,
        "pin": args.pin,
        "pymodbus": __import__("pymodbus").__version__,
        "libmodbus": subprocess.run(
            ["pkg-config", "--modversion", "libmodbus"], capture_output=True, text=True
        ).stdout.strip(),
        "count": c,
        "seconds_per_run": s,
        "requests_cap": n,
        "runs": args.runs,
        "results": {k: results[k] for k in ("c_libmodbus", "tanji", "pymodbus", "minimal_asyncio")},
        "ratio_to_c": {
            k: results[k]["ratio_to_c"] for k in ("tanji", "pymodbus", "minimal_asyncio")
        },
    }
    if pipelined in results:
        report["not_comparable"] = {
            pipelined: {
                **results[pipelined],
                "note": f"{args.pipeline} requests in flight; the C client has one",
            }
        }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
