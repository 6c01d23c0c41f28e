"""One Modbus connection: a TCP socket, a serial port, or a serial device server's socket.

Every unit id reached through the same connection shares one ModbusLink and is served strictly
one request at a time (`lock`). The link reconnects on demand with exponential backoff and
jitter, so several meters behind one dead device server cause one connection attempt, not one
each. Requests fail with RequestFailed, whose `reason` is the reading's quality code.

Framing: MBAP for Modbus TCP is our own (mbap.py: a response whose transaction id does not
match is discarded, garbage closes the connection); RTU with CRC, for serial and RTU over TCP,
is pymodbus' (a frame with a bad CRC is discarded; the request then times out).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import struct
import termios
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from collectors.modbus.config import (
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)
from collectors.modbus.mbap import Garbled, MbapClient
from gateway.errors import TanjiFailure

log = logging.getLogger(__name__)

# Modbus exception codes by meaning (Modbus Application Protocol v1.1b3, section 7)
EXCEPTION_NAMES = {
    1: "illegal-function",
    2: "illegal-address",
    3: "illegal-value",
    4: "device-failure",
    5: "acknowledge",
    6: "device-busy",
    8: "memory-parity-error",
    10: "gateway-path-unavailable",
    11: "gateway-target-no-response",
}
UNSUPPORTED = {1, 2}  # the device does not have this function or address: do not ask again
TRY_AGAIN = {5, 6}  # the device is busy: the same request may succeed a moment later
UNREACHABLE = {10, 11}  # a gateway cannot reach the device: as good as a timeout


class Failure(enum.Enum):
    CONNECT = "connect"  # no connection: nothing on this link can be read now
    LOST = "lost"  # the connection broke during a request
    TIMEOUT = "timeout"  # no (valid) answer in time
    EXCEPTION = "exception"  # the device answered with a Modbus exception
    RESPONSE = "response"  # an answer that does not fit the request


class RequestFailed(TanjiFailure):
    def __init__(self, kind: Failure, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.code = code


_READS = {
    1: "read_coils",
    2: "read_discrete_inputs",
    3: "read_holding_registers",
    4: "read_input_registers",
}
_READ_REQUEST = struct.Struct(">BHH")  # function code, start address, quantity
_TIMEOUTS_BEFORE_RECONNECT = 3

Client = MbapClient | AsyncModbusTcpClient | AsyncModbusSerialClient


def exception_failure(code: int) -> RequestFailed:
    name = EXCEPTION_NAMES.get(code, f"code-{code}")
    return RequestFailed(Failure.EXCEPTION, f"modbus-exception-{name}", code)


def parse_read_response(function_code: int, count: int, pdu: bytes) -> bytes:
    """Data of a read response PDU (Modbus Application Protocol v1.1b3, 6.1-6.4): the register
    bytes as on the wire (2 per register, big-endian), or one byte 0/1 per bit (coils and
    inputs are packed least significant bit first)."""
    if len(pdu) >= 2 and pdu[0] == function_code | 0x80:
        raise exception_failure(pdu[1])
    if not pdu or pdu[0] != function_code:
        raise RequestFailed(Failure.RESPONSE, "wrong-function-in-response")
    bits = function_code in (1, 2)
    expected = (count + 7) // 8 if bits else 2 * count
    if len(pdu) < 2 or pdu[1] != expected or len(pdu) != 2 + expected:
        raise RequestFailed(Failure.RESPONSE, "short-response")
    data = pdu[2:]
    if bits:
        return bytes((data[i >> 3] >> (i & 7)) & 1 for i in range(count))
    return data


def _has_partial_frame(client: Client) -> bool:
    if isinstance(client, MbapClient):
        return client.has_partial_frame
    # pymodbus keeps unparsed bytes in an internal buffer (read defensively)
    return bool(getattr(getattr(client, "ctx", None), "recv_buffer", b""))


class ModbusLink:
    """A connection and its lock; `read` connects on demand."""

    def __init__(
        self, settings: ModbusTcpConnection | ModbusRtuOverTcpConnection | ModbusRtuConnection
    ) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self._client: Client | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0  # monotonic time before which no new connection is attempted
        self._timeouts = 0
        self._idle_since = 0.0  # monotonic end of the last exchange

    @property
    def name(self) -> str:
        s = self.settings
        if isinstance(s, ModbusRtuConnection):
            return s.serial_port
        return f"{s.host}:{s.port}"

    @property
    def is_serial_line(self) -> bool:
        """RTU framing has no transaction id: a late answer could be taken for the next one."""
        return isinstance(self.settings, ModbusRtuConnection | ModbusRtuOverTcpConnection)

    def _new_pymodbus_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        s = self.settings
        # our own timeouts and retries govern; pymodbus' never fire first, never reconnect
        common = {"timeout": 3600.0, "retries": 0, "reconnect_delay": 0}
        if isinstance(s, ModbusRtuConnection):
            return AsyncModbusSerialClient(
                s.serial_port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                **common,  # type: ignore[arg-type]
            )
        return AsyncModbusTcpClient(s.host, port=s.port, framer=FramerType.RTU, **common)  # type: ignore[arg-type]

    async def _open(self) -> Client:
        s = self.settings
        if isinstance(s, ModbusTcpConnection):
            return await MbapClient.connect(s.host, s.port)
        client = self._new_pymodbus_client()
        try:
            if await client.connect():
                return client
        except BaseException:
            client.close()
            raise
        client.close()
        raise ConnectionError("pymodbus could not connect")

    async def _connected(self, timeout_s: float) -> Client:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        if time.monotonic() < self._retry_at:
            raise RequestFailed(Failure.CONNECT, "connect-failed")
        try:
            async with asyncio.timeout(timeout_s):
                client = await self._open()
        except (TimeoutError, OSError, ModbusException, termios.error) as exc:
            # termios.error: the serial driver refused the line settings (e.g. parity)
            self._backoff(exc)
            raise RequestFailed(Failure.CONNECT, "connect-failed") from None
        self._backoff_s = 0.0
        self._client = client
        return client

    def _backoff(self, exc: BaseException) -> None:
        s = self.settings
        self._backoff_s = min(s.backoff_max_s, max(s.backoff_initial_s, self._backoff_s * 2))
        wait = self._backoff_s * random.uniform(0.8, 1.2)  # jitter spreads reconnects
        self._retry_at = time.monotonic() + wait
        log.warning(
            "modbus link %s: cannot connect (%s); next attempt in %.1f s",
            self.name,
            str(exc) or type(exc).__name__,
            wait,
        )

    async def read(
        self, unit_id: int, function_code: int, address: int, count: int, timeout_s: float
    ) -> bytes:
        """One read request: register bytes as on the wire, or a byte 0/1 per bit (function
        codes 1 and 2); see parse_read_response.

        Hold `lock` around the call (with whatever pauses belong to the exchange)."""
        client = await self._connected(timeout_s)
        try:
            if isinstance(client, MbapClient):
                pdu = await client.request(
                    unit_id, _READ_REQUEST.pack(function_code, address, count), timeout_s
                )
                values = parse_read_response(function_code, count, pdu)
            else:
                values = await self._read_pymodbus(
                    client, unit_id, function_code, address, count, timeout_s
                )
        except Garbled:
            self.close()
            raise RequestFailed(Failure.TIMEOUT, "garbled-response") from None
        except (TimeoutError, ModbusIOException):
            # ModbusIOException: pymodbus got an answer for another unit, or none at all.
            # A partial frame left behind means something arrived that is not a whole frame.
            garbled = _has_partial_frame(client)
            await self._after_timeout(garbled)
            reason = "garbled-response" if garbled else "timeout"
            raise RequestFailed(Failure.TIMEOUT, reason) from None
        except (ModbusException, OSError):
            self.close()
            raise RequestFailed(Failure.LOST, "connection-lost") from None
        finally:
            self._idle_since = time.monotonic()
        self._timeouts = 0
        return values

    async def _read_pymodbus(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        unit_id: int,
        function_code: int,
        address: int,
        count: int,
        timeout_s: float,
    ) -> bytes:
        if isinstance(self.settings, ModbusRtuConnection):
            # the silence that separates RTU frames on the bus (Modbus over Serial Line 2.5.1.1)
            quiet = self._idle_since + self.settings.frame_gap_s - time.monotonic()
            if quiet > 0:
                await asyncio.sleep(quiet)
        read = getattr(client, _READS[function_code])
        async with asyncio.timeout(timeout_s):
            response = await read(address, count=count, device_id=unit_id)
        if isinstance(response, ExceptionResponse) or response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise exception_failure(code)
        if function_code in (1, 2):
            bits = response.bits
            if len(bits) < count:
                raise RequestFailed(Failure.RESPONSE, "short-response")
            return bytes(int(bool(b)) for b in bits[:count])
        registers = response.registers
        if len(registers) != count:
            raise RequestFailed(Failure.RESPONSE, "short-response")
        return struct.pack(f">{count}H", *registers)

    async def _after_timeout(self, garbled: bool) -> None:
        self._timeouts += 1
        if self.is_serial_line:
            # let a late answer arrive while nothing is outstanding, so it is dropped instead
            # of being taken for the answer to the next request (RTU has no transaction id)
            await asyncio.sleep(min(0.5, 0.05 + self.settings.timeout_s / 4))
        if isinstance(self.settings, ModbusRtuConnection):
            return  # a serial port has no connection to renew; the next request starts clean
        if garbled or self._timeouts >= _TIMEOUTS_BEFORE_RECONNECT:
            # a stream out of step cannot be trusted to find the next frame boundary, and a
            # socket that has stopped answering is often half-dead: start a fresh one
            self._timeouts = 0
            self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
