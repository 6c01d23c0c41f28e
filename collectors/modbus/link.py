"""One Modbus connection: a TCP socket, a serial port, or a serial device server's socket.

Every unit id reached through the same connection shares one ModbusLink and is served strictly
one request at a time (`lock`). The link reconnects on demand with exponential backoff and
jitter, so several meters behind one dead device server cause one connection attempt, not one
each. Requests fail with RequestFailed, whose `reason` is the reading's quality code.

Framing is pymodbus': MBAP for TCP (a response whose transaction id does not match is
discarded), RTU with CRC for serial and RTU-over-TCP (a frame with a bad CRC is discarded; the
request then times out).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from collectors.modbus.config import (
    ModbusLinkSettings,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)

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


class RequestFailed(Exception):
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
_TIMEOUTS_BEFORE_RECONNECT = 3


class ModbusLink:
    """A connection and its lock; `read` connects on demand."""

    def __init__(
        self, settings: ModbusTcpConnection | ModbusRtuOverTcpConnection | ModbusRtuConnection
    ) -> None:
        self.settings = settings
        self.lock = asyncio.Lock()
        self.reconnects = 0
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
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

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
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
        framer = FramerType.RTU if isinstance(s, ModbusRtuOverTcpConnection) else FramerType.SOCKET
        return AsyncModbusTcpClient(s.host, port=s.port, framer=framer, **common)  # type: ignore[arg-type]

    async def _connected(self, timeout_s: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        if time.monotonic() < self._retry_at:
            raise RequestFailed(Failure.CONNECT, "connect-failed")
        client = self._new_client()
        try:
            async with asyncio.timeout(timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            client.close()
            self._backoff(self.settings)
            raise RequestFailed(Failure.CONNECT, "connect-failed")
        self.reconnects += 1
        self._backoff_s = 0.0
        self._client = client
        return client

    def _backoff(self, s: ModbusLinkSettings) -> None:
        self._backoff_s = min(s.backoff_max_s, max(s.backoff_initial_s, self._backoff_s * 2))
        wait = self._backoff_s * random.uniform(0.8, 1.2)  # jitter spreads reconnects
        self._retry_at = time.monotonic() + wait
        log.warning("modbus link %s: cannot connect; next attempt in %.1f s", self.name, wait)

    async def read(
        self, unit_id: int, function_code: int, address: int, count: int, timeout_s: float
    ) -> list[int]:
        """One read request; register words, or 0/1 per bit for function codes 1 and 2.

        Hold `lock` around the call (with whatever pauses belong to the exchange)."""
        client = await self._connected(timeout_s)
        read = getattr(client, _READS[function_code])
        if isinstance(self.settings, ModbusRtuConnection):
            # the silence that separates RTU frames on the bus (Modbus over Serial Line 2.5.1.1)
            quiet = self._idle_since + self.settings.frame_gap_s - time.monotonic()
            if quiet > 0:
                await asyncio.sleep(quiet)
        try:
            async with asyncio.timeout(timeout_s):
                response = await read(address, count=count, device_id=unit_id)
        except (TimeoutError, ModbusIOException):
            # ModbusIOException: pymodbus got an answer for another unit, or none at all.
            # Bytes left in pymodbus' receive buffer (an internal attribute, read defensively)
            # mean something arrived that is not a valid frame: garbage or a truncated frame.
            garbled = bool(getattr(getattr(client, "ctx", None), "recv_buffer", b""))
            await self._after_timeout(garbled)
            raise RequestFailed(
                Failure.TIMEOUT, "garbled-response" if garbled else "timeout"
            ) from None
        except (ModbusException, OSError):
            self.close()
            raise RequestFailed(Failure.LOST, "connection-lost") from None
        finally:
            self._idle_since = time.monotonic()
        self._timeouts = 0
        if isinstance(response, ExceptionResponse) or response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, f"code-{code}")
            raise RequestFailed(Failure.EXCEPTION, f"modbus-exception-{name}", code)
        if function_code in (1, 2):
            values = [int(bool(b)) for b in response.bits]
        else:
            values = list(response.registers)
        if len(values) < count:
            raise RequestFailed(Failure.RESPONSE, "short-response")
        return values[:count]

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
