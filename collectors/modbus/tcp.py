"""Modbus TCP poller: reads one meter's points on its interval and yields Readings.

A timeout, refused connection or Modbus exception becomes `bad` readings with a reason and
puts the device into exponential backoff; it never raises, so other devices are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from decimal import Decimal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from collectors.base import WallClock
from collectors.modbus.config import ModbusPoint, ModbusTcpDevice
from collectors.modbus.decode import DecodeError, decode, words_to_bytes
from gateway.models import DeviceSpec, Quality, Reading

log = logging.getLogger(__name__)

# Modbus exception codes by meaning (Modbus Application Protocol v1.1b3, section 7)
EXCEPTION_REASONS = {
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


class ReadFailed(Exception):
    """One request failed; `reason` is the quality reason code, `fatal` drops the connection."""

    def __init__(self, reason: str, fatal: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


class ModbusTcpCollector:
    """Polls one Modbus TCP device. Use `stream()`; one connection per device."""

    def __init__(
        self, meter_id: str, device: ModbusTcpDevice, clock: WallClock = time.time_ns
    ) -> None:
        self.meter_id = meter_id
        self.device = device
        self._clock = clock
        self._client: AsyncModbusTcpClient | None = None
        self._backoff_s = 0.0

    @classmethod
    def from_spec(cls, meter_id: str, device: DeviceSpec, clock: WallClock) -> ModbusTcpCollector:
        if not isinstance(device, ModbusTcpDevice):
            raise TypeError(f"modbus_tcp collector got a {type(device).__name__}")
        return cls(meter_id, device, clock)

    async def stream(self) -> AsyncIterator[list[Reading]]:
        interval = self.device.connection.poll_interval_s
        try:
            while True:
                readings = await self.poll_once()
                yield readings
                await asyncio.sleep(self._delay_until_next_cycle(interval))
        finally:
            self._disconnect()

    def _delay_until_next_cycle(self, interval: float) -> float:
        """Cycles are aligned to the interval on the monotonic clock; backoff can stretch it."""
        now = time.monotonic()
        next_tick = (now // interval + 1) * interval
        delay = next_tick - now
        if self._backoff_s > delay:
            delay = self._backoff_s * random.uniform(0.8, 1.2)  # jitter spreads reconnects
        return delay

    async def poll_once(self) -> list[Reading]:
        """One cycle: every point read once. Never raises for device faults."""
        conn = self.device.connection
        try:
            client = await self._connected()
        except ReadFailed as failure:
            self._fail()
            return [self._bad(p, failure.reason, b"") for p in self.device.points]
        readings: list[Reading] = []
        failed = False
        for point in self.device.points:
            if failed:
                readings.append(self._bad(point, "not-polled-after-timeout", b""))
                continue
            try:
                words = await self._read(client, point, conn.timeout_s, conn.unit_id)
            except ReadFailed as failure:
                readings.append(self._bad(point, failure.reason, b""))
                if failure.fatal:
                    failed = True
                    self._disconnect()
                continue
            readings.append(self._decode(point, words))
        if failed:
            self._fail()
        else:
            self._backoff_s = 0.0
        return readings

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        conn = self.device.connection
        client = AsyncModbusTcpClient(
            conn.host, port=conn.port, timeout=conn.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            async with asyncio.timeout(conn.timeout_s):
                ok = await client.connect()
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok:
            client.close()
            raise ReadFailed("connect-failed", fatal=True)
        self._client = client
        return client

    async def _read(
        self, client: AsyncModbusTcpClient, point: ModbusPoint, timeout_s: float, unit_id: int
    ) -> list[int]:
        read = (
            client.read_holding_registers
            if point.function_code == 3
            else client.read_input_registers
        )
        try:
            async with asyncio.timeout(timeout_s * 1.5):
                response = await read(point.address, count=point.count, device_id=unit_id)
        except TimeoutError:
            raise ReadFailed("timeout", fatal=True) from None
        except ModbusIOException:
            # pymodbus: no (matching) response within the timeout
            raise ReadFailed("timeout", fatal=True) from None
        except ModbusException:
            raise ReadFailed("connection-lost", fatal=True) from None
        except OSError:
            raise ReadFailed("connection-lost", fatal=True) from None
        if isinstance(response, ExceptionResponse) or response.isError():
            code = getattr(response, "exception_code", 0)
            name = EXCEPTION_REASONS.get(code, f"code-{code}")
            raise ReadFailed(f"modbus-exception-{name}", fatal=False)
        registers = list(response.registers)
        if len(registers) < point.count:
            raise ReadFailed("short-response", fatal=False)
        return registers[: point.count]

    def _decode(self, point: ModbusPoint, words: list[int]) -> Reading:
        raw = words_to_bytes(words)
        try:
            value = decode(words, point.data_type, point.word_order, point.scale)
        except DecodeError as exc:
            return self._bad(point, exc.reason, raw)
        return self._reading(point, raw, value, Quality.good())

    def _bad(self, point: ModbusPoint, reason: str, raw: bytes) -> Reading:
        return self._reading(point, raw, None, Quality.bad(reason))

    def _reading(
        self, point: ModbusPoint, raw: bytes, value: Decimal | None, quality: Quality
    ) -> Reading:
        return Reading(
            meter_id=self.meter_id,
            point=point.name,
            quantity=point.quantity,
            kind=point.kind,
            unit=point.unit,
            ts_ns=self._clock(),
            raw=raw,
            value=value,
            quality=quality,
        )

    def _fail(self) -> None:
        conn = self.device.connection
        self._backoff_s = min(conn.backoff_max_s, max(conn.backoff_initial_s, self._backoff_s * 2))
        log.warning(
            "meter %s at %s:%d failed; retrying in %.1f s",
            self.meter_id,
            conn.host,
            conn.port,
            self._backoff_s,
        )

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
