"""Modbus TCP client framing (MBAP, Modbus Messaging on TCP/IP Implementation Guide v1.0b).

One request outstanding per connection, as meters and gateways expect. A response is matched
by transaction id and unit id; anything else that arrives (a late answer to a request that
timed out, an answer for someone else) is counted and discarded. Bytes that cannot be an MBAP
header (protocol id not 0, impossible length) mean the stream is out of step: the pending
request fails at once as garbled and the connection is closed, since no frame boundary after
garbage can be trusted.

Hand-written rather than pymodbus' client because the gateway's request path must cost little
CPU (see bench/README.md, requests per second on one connection); RTU framing stays with
pymodbus.
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from gateway.errors import TanjiFailure

_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MAX_PDU = 253  # Modbus Application Protocol v1.1b3, section 4.1


class Garbled(TanjiFailure):
    """The byte stream is not valid MBAP (the device's answer, not the user's input: the link
    turns it into a failed request)."""


class MbapClient(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._tid = 0
        self._waiting: tuple[int, int, asyncio.Future[bytes]] | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> MbapClient:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def has_partial_frame(self) -> bool:
        return bool(self._buffer)

    async def request(self, unit_id: int, pdu: bytes, timeout_s: float) -> bytes:
        """Send one request PDU and return the response PDU (function code first).

        Raises TimeoutError, Garbled, or ConnectionError."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("not connected")
        if self._waiting is not None:
            raise RuntimeError("one request at a time on an MBAP connection")
        self._tid = (self._tid + 1) & 0xFFFF
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        self._waiting = (self._tid, unit_id, future)
        timer = loop.call_later(timeout_s, _expire, future)
        self._transport.write(_HEADER.pack(self._tid, 0, len(pdu) + 1, unit_id) + pdu)
        try:
            return await future
        finally:
            timer.cancel()
            self._waiting = None

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not subclass asyncio.Transport, so no isinstance)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= 7:
            tid, protocol, length, unit = _HEADER.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                self._fail(Garbled(f"not an MBAP header: {bytes(buf[:7]).hex()}"))
                return
            end = 6 + length
            if len(buf) < end:
                return  # the rest of the frame is still on its way
            pdu = bytes(buf[7:end])
            del buf[:end]
            waiting = self._waiting
            # anything else answers no outstanding request (e.g. one that timed out): dropped
            if waiting and waiting[0] == tid and waiting[1] == unit and not waiting[2].done():
                waiting[2].set_result(pdu)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiting is not None and not self._waiting[2].done():
            self._waiting[2].set_exception(ConnectionError(str(exc or "connection closed")))

    def _fail(self, error: Exception) -> None:
        if self._waiting is not None and not self._waiting[2].done():
            self._waiting[2].set_exception(error)
        self._buffer.clear()
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
