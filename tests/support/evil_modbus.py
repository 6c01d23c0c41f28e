"""A misbehaving Modbus TCP server on a real loopback socket, for faults pymodbus' own server
cannot produce: garbage, truncated frames, answers with the wrong transaction id or length,
and RTU frames with a bad CRC. Registers hold address + 1000 (so answers can be checked)."""

from __future__ import annotations

import asyncio
import struct

MODES = ("ok", "garbage", "truncated", "wrong-tid-first", "wrong-count", "bad-crc", "rtu")
# "wrong-count" spoils only answers for requests starting at WRONG_COUNT_ADDRESS
WRONG_COUNT_ADDRESS = 5


def registers(address: int, count: int) -> list[int]:
    return [(address + i + 1000) & 0xFFFF for i in range(count)]


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), low byte first on the wire
    (Modbus over Serial Line v1.02, section 6.2.2), written here independently of pymodbus."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


class EvilServer:
    def __init__(self, port: int, mode: str = "ok") -> None:
        self.port = port
        self.mode = mode
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> EvilServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                if self.mode in ("bad-crc", "rtu"):
                    frame = await reader.readexactly(8)
                    unit, fc, address, count = struct.unpack(">BBHH", frame[:6])
                    self.requests += 1
                    body = bytes([unit, fc, 2 * count]) + b"".join(
                        struct.pack(">H", r) for r in registers(address, count)
                    )
                    crc = crc16(body)
                    if self.mode == "bad-crc":
                        crc = bytes(b ^ 0xFF for b in crc)
                    writer.write(body + crc)
                    await writer.drain()
                    continue
                header = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                fc, address, count = struct.unpack(">BHH", pdu[:5])
                self.requests += 1
                writer.write(self._answer(tid, unit, fc, address, count))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _answer(self, tid: int, unit: int, fc: int, address: int, count: int) -> bytes:
        def frame(t: int, values: list[int], claimed: int | None = None) -> bytes:
            data = b"".join(struct.pack(">H", v) for v in values)
            pdu = bytes([fc, claimed if claimed is not None else len(data)]) + data
            return struct.pack(">HHHB", t, 0, len(pdu) + 1, unit) + pdu

        good = frame(tid, registers(address, count))
        if self.mode == "garbage":
            return b"\xde\xad\xbe\xef" * 8
        if self.mode == "truncated":
            return good[: len(good) // 2]
        if self.mode == "wrong-tid-first":
            # a stale answer (another transaction, other values) before the real one
            return frame((tid + 7) & 0xFFFF, [0xBAD] * count) + good
        if self.mode == "wrong-count" and address == WRONG_COUNT_ADDRESS:
            return frame(tid, registers(address, max(1, count - 1)))
        return good
