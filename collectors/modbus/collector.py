"""The Modbus poller: reads one device's points on its interval with the fewest requests.

Transport-independent (TCP, RTU, RTU over TCP all go through a ModbusLink). Never raises for
device faults: a timeout, lost connection or Modbus exception becomes `bad` readings with the
reason code, and the device backs off exponentially (with jitter) while it does not answer.

Exceptions are handled by meaning: a joined request refused as illegal address/function is
cut in two (at its widest gap) until the parts are accepted, so one unmapped register does not
take its neighbours down; a point refused alone is disabled, reported, and asked again on its
own after `disabled_retry_initial_s`, doubling up to `disabled_retry_max_s` while the meter
keeps refusing it (a meter that refused everything for a while, e.g. while it started, gets
its points back; once one does, the cuts are forgotten so requests join again). "busy" and
timeouts are retried `retries` times; "gateway target no response" ends the cycle like a
timeout; an answer that does not fit its request spoils only that request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

from collectors.base import CollectorStats, Shared, WallClock
from collectors.modbus.config import (
    AnyModbusDevice,
    ModbusRtuConnection,
    ModbusRtuDevice,
    ModbusRtuOverTcpDevice,
    ModbusTcpDevice,
    link_key,
)
from collectors.modbus.decode import DecodeError, Decoder, decoder
from collectors.modbus.link import (
    TRY_AGAIN,
    UNREACHABLE,
    UNSUPPORTED,
    Failure,
    ModbusLink,
    RequestFailed,
)
from collectors.modbus.plan import Request, plan_device, split_point
from collectors.modbus.points import BIT_FUNCTIONS, ModbusPoint
from gateway.models import DeviceSpec, Quality, Reading

log = logging.getLogger(__name__)

_BUSY_PAUSE_S = 0.05
GOOD = Quality.good()  # immutable, shared by every good reading
NS = 1_000_000_000


@dataclass
class Disabled:
    """A point the device refused on its own: why, and when it is asked again."""

    reason: str
    delay_s: float  # the pause before the next probe (doubles while it is refused)
    due: float  # time.monotonic() of the next probe
    retry_at_s: float  # the same on the wall clock (UTC seconds), for status


class ModbusCollector:
    """Polls one Modbus device through a (possibly shared) link. Use `stream()`."""

    def __init__(
        self,
        meter_id: str,
        device: AnyModbusDevice,
        link: ModbusLink,
        clock: WallClock = time.time_ns,
    ) -> None:
        self.meter_id = meter_id
        self.device = device
        self.link = link
        self.stats = CollectorStats()
        self._clock = clock
        self._cuts: set[int] = set()  # points that must start a request (after a refusal)
        self._disabled: dict[int, Disabled] = {}  # points the device says it does not have
        self._backoff_s = 0.0
        self.requests = self._plan()
        # per point, built once: where its bytes sit in a response, and its decoder
        self._codecs: list[tuple[ModbusPoint, int, int, Decoder]] = []
        for p in device.points:
            width = 1 if p.function_code in BIT_FUNCTIONS else 2  # response bytes per address
            codec = decoder(p.data_type, p.word_order, p.scale, p.offset, p.bit, p.bit_count)
            self._codecs.append((p, width, width * p.count, codec))

    @classmethod
    def from_spec(
        cls, meter_id: str, device: DeviceSpec, clock: WallClock, shared: Shared
    ) -> ModbusCollector:
        if not isinstance(device, ModbusTcpDevice | ModbusRtuOverTcpDevice | ModbusRtuDevice):
            raise TypeError(f"modbus collector got a {type(device).__name__}")
        key = "modbus:" + "|".join(link_key(device))
        link = shared.get(key, ModbusLink, lambda: ModbusLink(device.connection))
        return cls(meter_id, device, link, clock)

    def _plan(self) -> list[Request]:
        enabled = [i for i in range(len(self.device.points)) if i not in self._disabled]
        return plan_device(self.device, only=enabled, cuts=self._cuts)

    # --- schedule ------------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[list[Reading]]:
        """Cycles start on the monotonic grid of the poll interval (tick n at n * interval,
        counted in integers so timer jitter cannot shift it); a cycle that runs past the next
        start skips (and counts) the starts it missed instead of queueing them."""
        interval = self.device.connection.poll_interval_s
        tick = math.floor(time.monotonic() / interval)  # the first cycle runs at once, off-grid
        on_grid = False
        while True:
            readings = await self.poll_once()
            if readings:
                yield readings
            now = time.monotonic()
            tick += 1
            if now > tick * interval:
                missed = math.floor(now / interval) - tick + 1
                if on_grid:  # only a cycle that started on the grid had a deadline to miss
                    self.stats.overruns += missed
                tick += missed
            on_grid = True
            delay = tick * interval - now
            backoff = self._backoff_s * random.uniform(0.8, 1.2)  # jitter spreads retries
            if backoff > delay:
                delay = backoff
                tick = math.floor((now + delay) / interval)  # back on the grid after the pause
                on_grid = False
            await asyncio.sleep(delay)

    # --- one cycle -----------------------------------------------------------------------------

    async def poll_once(self) -> list[Reading]:
        """Every enabled point read once. Never raises for device faults."""
        self.stats.cycles += 1
        points = self.device.points
        readings: list[Reading] = []
        done: set[int] = set()  # points that have their reading (good or bad) this cycle
        now = time.monotonic()
        # disabled points due to be asked again, each on its own, after the cycle's requests
        probes = [
            Request(points[i].function_code, points[i].address, points[i].count, (i,))
            for i, d in sorted(self._disabled.items())
            if d.due <= now
        ]
        queue = deque([*self.requests, *probes])
        stopped: str | None = None  # reason the device stopped answering this cycle
        while queue:
            request = queue.popleft()
            probe = request in probes
            todo = [i for i in request.points if i not in done]
            done.update(todo)
            if stopped is not None:
                if not probe:  # a probe waits for the next cycle the device answers
                    readings += [self._bad(points[i], stopped) for i in todo]
                continue
            try:
                data, ts = await self._execute(request)
            except RequestFailed as failure:
                if failure.kind is Failure.EXCEPTION and failure.code in UNSUPPORTED:
                    done.difference_update(todo)
                    readings += self._refused(request, failure)
                    # the plan changed: read what is left of this cycle with the new one
                    left = {i for r in queue for i in r.points} | set(todo)
                    queue = deque(
                        [
                            *(r for r in self.requests if left.intersection(r.points)),
                            *(r for r in queue if r in probes),
                        ]
                    )
                    continue
                if failure.kind is Failure.RESPONSE:
                    self.stats.bad_responses[failure.reason] += 1
                readings += [self._bad(points[i], failure.reason) for i in todo]
                if failure.kind not in (Failure.EXCEPTION, Failure.RESPONSE) or (
                    failure.code in UNREACHABLE
                ):
                    stopped = f"not-polled-after-{failure.kind.value}"
                continue
            readings += [self._point_reading(i, request, data, ts) for i in todo]
            if probe:
                self._enable(request.points[0])
        if stopped is not None:
            self._fail(stopped)
        else:
            self._backoff_s = 0.0
        return readings

    def _refused(self, request: Request, failure: RequestFailed) -> list[Reading]:
        """The device has no such address or function: narrow down which point it is."""
        if len(request.points) > 1:
            self._cuts.add(split_point(request, self.device.points))
            self.requests = self._plan()
            log.warning(
                "meter %s: %s refused (%s); reading it in two parts from now on",
                self.meter_id,
                request.describe(),
                failure.reason,
            )
            return []
        (index,) = request.points
        point = self.device.points[index]
        earlier = self._disabled.get(index)
        if earlier is None:
            delay = self.device.disabled_retry_initial_s
        else:  # refused again when asked again
            delay = min(self.device.disabled_retry_max_s, earlier.delay_s * 2)
        retry_at_s = self._clock() / NS + delay
        self._disabled[index] = Disabled(
            failure.reason, delay, time.monotonic() + delay, retry_at_s
        )
        self.stats.disabled_retry_at[point.name] = retry_at_s
        if earlier is None:
            self.stats.disabled_points.append(point.name)
            self.requests = self._plan()
        (log.error if earlier is None else log.info)(
            "meter %s: point %r at address %d refused (%s); not polled, asked again in %.0f s",
            self.meter_id,
            point.name,
            point.address,
            failure.reason,
            delay,
        )
        return [self._bad(point, failure.reason)]

    def _enable(self, index: int) -> None:
        """A disabled point answered when asked again: poll it again, and let requests join
        again (a refused join is cut again, at the cost of one refused request)."""
        point = self.device.points[index]
        del self._disabled[index]
        self.stats.disabled_points.remove(point.name)
        del self.stats.disabled_retry_at[point.name]
        self._cuts.clear()
        self.requests = self._plan()
        log.warning(
            "meter %s: point %r at address %d answers again; polled again",
            self.meter_id,
            point.name,
            point.address,
        )

    async def _execute(self, request: Request) -> tuple[bytes, int]:
        """Send one request, retrying timeouts and "busy"; returns its data and the time."""
        conn = self.device.connection
        for attempt in range(conn.retries + 1):
            async with self.link.lock:
                self.stats.requests += 1
                sent = time.monotonic()
                try:
                    values = await self.link.read(
                        conn.unit_id,
                        request.function_code,
                        request.address,
                        request.count,
                        conn.timeout_s,
                    )
                except RequestFailed as failure:
                    busy = failure.kind is Failure.EXCEPTION and failure.code in TRY_AGAIN
                    if failure.kind is Failure.TIMEOUT:
                        self.stats.timeouts += 1
                    elif failure.kind is Failure.EXCEPTION:
                        self.stats.exceptions[failure.reason] += 1
                    if attempt == conn.retries or not (busy or failure.kind is Failure.TIMEOUT):
                        raise
                else:
                    self.stats.latencies_s.append(time.monotonic() - sent)
                    return values, self._clock()
            self.stats.retries += 1
            if busy:
                await asyncio.sleep(_BUSY_PAUSE_S)  # outside the lock: others may use the bus
        raise AssertionError("unreachable")  # the last attempt returns or raises

    # --- readings ------------------------------------------------------------------------------

    def _point_reading(self, index: int, request: Request, data: bytes, ts: int) -> Reading:
        point, width, size, decode = self._codecs[index]
        first = (point.address - request.address) * width
        raw = data[first : first + size]
        try:
            value = decode(raw)
        except DecodeError as exc:
            return self._bad(point, exc.reason, raw, ts)
        implausible = point.implausible(value)
        if implausible:
            return self._bad(point, implausible, raw, ts)
        return self._reading(point, raw, value, GOOD, ts)

    def _bad(
        self, point: ModbusPoint, reason: str, raw: bytes = b"", ts: int | None = None
    ) -> Reading:
        return self._reading(point, raw, None, Quality.bad(reason), ts)

    def _reading(
        self,
        point: ModbusPoint,
        raw: bytes,
        value: Decimal | None,
        quality: Quality,
        ts: int | None,
    ) -> Reading:
        return Reading.trusted(
            self.meter_id,
            point.name,
            point.quantity,
            point.kind,
            point.unit,
            self._clock() if ts is None else ts,
            raw,
            value,
            quality,
        )

    def _fail(self, reason: str) -> None:
        conn = self.device.connection
        self._backoff_s = min(conn.backoff_max_s, max(conn.backoff_initial_s, self._backoff_s * 2))
        log.warning(
            "meter %s on %s: %s; next attempt in about %.1f s",
            self.meter_id,
            self.link.name,
            reason,
            self._backoff_s,
        )


def explain(device: DeviceSpec) -> list[str]:
    """The requests one poll cycle sends, for `tanji check-config --explain`."""
    if not isinstance(device, ModbusTcpDevice | ModbusRtuOverTcpDevice | ModbusRtuDevice):
        return []
    requests = plan_device(device)
    lines = [
        f"{device.protocol} {_where(device)} unit {device.connection.unit_id}:"
        f" {len(requests)} request(s) per cycle for {len(device.points)} point(s),"
        f" every {device.connection.poll_interval_s:g} s"
    ]
    for r in requests:
        names = ", ".join(device.points[i].name for i in r.points)
        lines.append(f"  {r.describe()}: {names}")
    return lines


def check_devices(devices: Sequence[tuple[str, DeviceSpec]]) -> list[str]:
    """Devices on one link must agree on how it is set up and use distinct unit ids."""
    problems: list[str] = []
    by_link: dict[tuple[str, ...], list[tuple[str, AnyModbusDevice]]] = {}
    for meter_id, d in devices:
        if isinstance(d, ModbusTcpDevice | ModbusRtuOverTcpDevice | ModbusRtuDevice):
            by_link.setdefault(link_key(d), []).append((meter_id, d))
    for members in by_link.values():
        first_id, first = members[0]
        link_fields = _link_fields(first)
        units: dict[int, list[str]] = {}
        differing: list[str] = []
        other: dict[str, object] = {}
        for meter_id, d in members:
            units.setdefault(d.connection.unit_id, []).append(meter_id)
            if _link_fields(d) != link_fields:
                differing.append(meter_id)
                other = other or _link_fields(d)
        where = _where(first)
        for unit, ids in units.items():
            if len(ids) > 1:
                problems.append(f"meters {_some(ids)} all use unit id {unit} on {where}")
        if differing:
            problems.append(
                f"meter(s) {_some(differing)} share {where} with {first_id!r} but set it up"
                f" differently ({other} vs {link_fields}); a shared line has one setting"
            )
    return problems


def _some(ids: Sequence[str], shown: int = 3) -> str:
    """'a', 'b', 'c' and 7 more: a problem stays one readable line however many meters."""
    names = ", ".join(repr(i) for i in ids[:shown])
    return names + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _link_fields(d: AnyModbusDevice) -> dict[str, object]:
    """Settings that belong to the connection, not the device: one value per shared link."""
    c = d.connection
    fields: dict[str, object] = {
        "backoff_initial_s": c.backoff_initial_s,
        "backoff_max_s": c.backoff_max_s,
    }
    if isinstance(c, ModbusRtuConnection):
        fields.update(
            baudrate=c.baudrate,
            parity=c.parity,
            stopbits=c.stopbits,
            bytesize=c.bytesize,
            inter_frame_delay_s=c.inter_frame_delay_s,
        )
    return fields


def _where(d: AnyModbusDevice) -> str:
    return ":".join(link_key(d)[1:])
