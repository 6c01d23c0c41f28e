"""The OPC UA collector: one session per device, points by subscription (default) or polling.

Nodes are resolved from namespace URI to index at every (re)connect, so a server that
renumbered its namespaces is read correctly. Each (re)connect first reads every point once,
so the values missed while the session was down are bounded by that read; while the server
cannot be reached, each backoff step yields `bad` readings with the reason (the gap shows in
the activity data). OPC UA status codes become reading quality with the status name as the
reason (Good, Uncertain*, Bad*). A node the server refuses (unknown id, wrong type) is
reported once and left out until the next reconnect; the other points go on. Never raises
for device faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import variant_to_binary
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from collectors.base import CollectorStats, Shared, WallClock
from collectors.opcua.config import OpcUaConnection, OpcUaDevice, OpcUaPoint, parse_node
from collectors.opcua.security import (
    TrustError,
    application_uri_of,
    check_trusted,
    load_certificate,
)
from gateway.errors import TanjiFailure
from gateway.models import (
    DeviceSpec,
    PointKind,
    Quality,
    QualityStatus,
    Reading,
    text_problem,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
GOOD = Quality.good()
SESSION_TIMEOUT_MS = 600_000
RAW_MAX_BYTES = 2048  # a variant's bytes kept as evidence: any label (256 chars) whole
POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class SecurityMismatch(TanjiFailure):
    """The server offers no endpoint with the configured security policy and mode."""


def first_certificate(chain: bytes | None) -> bytes:
    """The server's own certificate from an endpoint's (possibly chained) DER bytes: the
    first DER SEQUENCE, whose length is in its header. ValueError when there is none."""
    if not chain or len(chain) < 2 or chain[0] != 0x30:
        raise ValueError("the server's endpoint carries no certificate")
    if chain[1] < 0x80:
        return chain[: 2 + chain[1]]
    n = chain[1] & 0x7F
    if not 1 <= n <= 4 or len(chain) < 2 + n:
        raise ValueError("the server's certificate is not DER")
    return chain[: 2 + n + int.from_bytes(chain[2 : 2 + n], "big")]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID_TYPES = {
    "s": ua.NodeIdType.String,
    "i": ua.NodeIdType.Numeric,
    "g": ua.NodeIdType.Guid,
    "b": ua.NodeIdType.ByteString,
}


def to_ns(ts: datetime | None) -> int | None:
    if ts is None:
        return None
    if ts.tzinfo is None:  # asyncua gives UTC, sometimes naive
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def status_name(code: ua.StatusCode) -> str:
    """The status code's name without its info bits (0x80050400 is BadCommunicationError)."""
    base = int(code.value) & 0xFFFF0000
    name = getattr(ua.StatusCode(ua.UInt32(base)), "name", None)
    return str(name) if name else f"0x{int(code.value):08X}"


def reading_of(meter_id: str, point: OpcUaPoint, dv: ua.DataValue, now_ns: int) -> Reading:
    """A DataValue as a Reading: quality from the status code, the value exact and scaled (a
    label point's text as it is), the variant's encoded bytes as `raw`, the source and server
    timestamps kept."""
    variant = dv.Value
    raw = variant_to_binary(variant) if variant is not None else b""
    status = dv.StatusCode or ua.StatusCode(ua.UInt32(StatusCodes.Good))
    label = point.kind is PointKind.LABEL

    def made(value: Decimal | str | None, quality: Quality) -> Reading:
        return Reading.trusted(
            meter_id,
            point.name,
            point.quantity,
            point.kind,
            point.unit,
            now_ns,
            raw[:RAW_MAX_BYTES],
            value if isinstance(value, Decimal) else None,
            quality,
            to_ns(dv.SourceTimestamp),
            to_ns(dv.ServerTimestamp),
            value if isinstance(value, str) else None,
        )

    if status.is_bad():
        return made(None, Quality.bad(status_name(status)))
    value = variant.Value if variant is not None else None
    reading: Decimal | str
    if label:
        text = label_text(value)
        if text is None:
            return made(None, Quality.bad("not-a-text"))
        problem = text_problem(text)
        if problem:
            return made(None, Quality.bad(problem))
        reading = text
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return made(None, Quality.bad("not-a-number"))
        if isinstance(value, float) and not math.isfinite(value):
            return made(None, Quality.bad("not-a-number"))
        reading = Decimal(value) * point.scale
        implausible = point.implausible(reading)
        if implausible:
            return made(None, Quality.bad(implausible))
    if status.is_uncertain():
        return made(reading, Quality(status=QualityStatus.UNCERTAIN, reason=status_name(status)))
    return made(reading, GOOD)


def label_text(value: Any) -> str | None:
    """A label's text from a String, a LocalizedText or an integer (a PLC's numeric product
    or recipe code); None for anything else. A string ends at its first NUL, as a PLC's
    fixed-length character array padded with NULs does (the raw bytes keep the padding)."""
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    if isinstance(value, str):
        return value.split("\x00", 1)[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _Placing:
    """Samples (from notifications and reads) as readings on the gateway's clock, in order,
    and one reading per point every cycle.

    A sample is kept only if its source timestamp is newer than the last one kept for its
    point: a subscription's first notification may carry an older sample than the read made
    just after it, and a counter must not appear to run backwards. Samples delivered together
    are placed at the receive time minus their age relative to the newest of them (only
    differences of the server's clock are used, never its absolute time). A point without a
    new sample in a cycle has not changed (the subscription reports every change; a read
    returns the current value): its last value is repeated at the cycle's time, so an idle
    counter reads like a polled one instead of leaving a gap.
    """

    def __init__(self, meter_id: str, points: Sequence[OpcUaPoint], stale_ns: int) -> None:
        self.meter_id = meter_id
        self.points = points
        self.stale_ns = stale_ns  # older than the last kept by up to this: a stale sample
        self.source: dict[str, int] = {}  # point -> newest source timestamp kept
        self.placed: dict[str, int] = {}  # point -> gateway time of its last reading
        self.last: dict[str, ua.DataValue] = {}  # point -> its last sample (bad ones too)

    def readings(
        self, samples: Sequence[tuple[OpcUaPoint, ua.DataValue]], now_ns: int
    ) -> list[Reading]:
        newest: dict[str, int] = {}
        timed = []
        for point, dv in samples:
            src = to_ns(dv.SourceTimestamp)
            timed.append((point, dv, src))
            if src is not None:
                newest[point.name] = max(newest.get(point.name, src), src)
        out = []
        for point, dv, src in sorted(timed, key=lambda t: (t[0].name, t[2] or 0)):
            at = now_ns
            if src is not None:
                kept = self.source.get(point.name)
                if kept is not None and self._stale(point.name, dv, src, kept):
                    continue
                self.source[point.name] = src
                at = now_ns - (newest[point.name] - src)
            out.append(self._place(point, dv, at))
            self.last[point.name] = dv  # a bad one too: then bad is what holds
        sampled = {r.point for r in out}
        for point in self.points:  # unchanged since their last sample: still that value now
            if point.name not in sampled and point.name in self.last:
                out.append(self._place(point, self.last[point.name], now_ns))
        return out

    def _stale(self, name: str, dv: ua.DataValue, src: int, kept: int) -> bool:
        """Whether a sample adds nothing: the very sample kept last (same time, status and
        value), or one a little older than it (a first notification overtaken by the read).
        A sample much older means the server's clock was set back: it counts."""
        if src == kept:
            last = self.last.get(name)
            return last is not None and (last.StatusCode, _value(last)) == (
                dv.StatusCode,
                _value(dv),
            )
        return kept - self.stale_ns < src < kept

    def _place(self, point: OpcUaPoint, dv: ua.DataValue, at: int) -> Reading:
        at = max(at, self.placed.get(point.name, -1) + 1)
        self.placed[point.name] = at
        return reading_of(self.meter_id, point, dv, at)


class _Notifications:
    """asyncua's subscription handler: data changes into a queue, a lost subscription sets
    the session's `lost` event."""

    def __init__(self, queue: asyncio.Queue[tuple[int, ua.DataValue]], lost: asyncio.Event):
        self.queue = queue
        self.lost = lost

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        item = data.monitored_item
        self.queue.put_nowait((int(item.ClientHandle), item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.lost.set()


class OpcUaCollector:
    """Reads one OPC UA device. Use `stream()`."""

    def __init__(self, meter_id: str, device: OpcUaDevice, clock: WallClock) -> None:
        self.meter_id = meter_id
        self.device = device
        self.clock = clock
        self.stats = CollectorStats()
        self._reported: set[str] = set()  # points refused by the server, reported once
        self._per_read = 0  # the server's MaxNodesPerRead (0: no limit)

    @classmethod
    def from_spec(
        cls, meter_id: str, device: DeviceSpec, clock: WallClock, shared: Shared
    ) -> OpcUaCollector:
        assert isinstance(device, OpcUaDevice)
        return cls(meter_id, device, clock)

    def _bad(self, points: Sequence[OpcUaPoint], reason: str) -> list[Reading]:
        now, bad = self.clock(), Quality.bad(reason)
        return [
            Reading.trusted(self.meter_id, p.name, p.quantity, p.kind, p.unit, now, b"", None, bad)
            for p in points
        ]

    async def stream(self) -> AsyncIterator[list[Reading]]:
        conn = self.device.connection
        backoff = conn.backoff_initial_s
        while True:
            try:
                async for batch in self._session():
                    backoff = conn.backoff_initial_s
                    yield batch
            except (TrustError, SecurityMismatch) as exc:  # needs the engineer, not a retry soon
                reason = (
                    "untrusted-server-certificate"
                    if isinstance(exc, TrustError)
                    else ("security-not-offered")
                )
                log.error("%s: OPC UA %s: %s", self.meter_id, conn.endpoint, exc)
                self.stats.exceptions[reason] += 1
                yield self._bad(self.device.points, reason)
                backoff = conn.backoff_max_s
            except (OSError, TimeoutError, ConnectionError, UaError, ValueError, TypeError) as exc:
                reason = _reason(exc)
                log.warning("%s: OPC UA %s: %s", self.meter_id, conn.endpoint, reason)
                self.stats.timeouts += isinstance(exc, TimeoutError)
                self.stats.exceptions[reason] += 1
                yield self._bad(self.device.points, reason)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, conn.backoff_max_s)

    async def _session(self) -> AsyncIterator[list[Reading]]:
        conn = self.device.connection
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client = await connect(conn, on_lost)
        try:
            self._per_read, per_call = await operation_limits(client)
            points, nodes, refused = await self._resolve(client)
            if refused:
                yield refused
            queue: asyncio.Queue[tuple[int, ua.DataValue]] = asyncio.Queue()
            subscribed = [i for i, p in enumerate(points) if p.mode == "subscribe"]
            polled = [i for i, p in enumerate(points) if p.mode == "poll"]
            interval_ms = conn.poll_interval_s * 1000
            if subscribed:
                subscription = await client.create_subscription(
                    interval_ms, _Notifications(queue, lost)
                )
                items = [self._item(i, points[i], nodes[i], interval_ms) for i in subscribed]
                results = []
                for chunk in _chunks(items, per_call):  # the server's limit per call
                    results += await subscription.create_monitored_items(chunk)
                failed = [
                    (i, r) for i, r in zip(subscribed, results, strict=True)
                    if isinstance(r, ua.StatusCode)
                ]  # fmt: skip
                if failed:  # reported once; read by polling instead (a refused node then
                    # reads bad, which is dropped for a reported point)
                    yield self._refuse([(points[i], status_name(r)) for i, r in failed])
                    gone = {i for i, _ in failed}
                    subscribed = [i for i in subscribed if i not in gone]
                    polled = sorted([*polled, *gone])
            # per session (a new server, a new clock); a sample up to two publishing intervals
            # older than the last kept is stale, one older still means a clock set back
            stale_ns = int(max(2 * conn.poll_interval_s, 5.0) * 1e9)
            placing = _Placing(self.meter_id, points, stale_ns)
            # every point once now: what changed while we were away is bounded by this read
            first = await self._read(client, points, nodes, range(len(points)))
            yield placing.readings(first, self.clock())
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), conn.poll_interval_s)
                if lost.is_set():
                    raise ConnectionError("session lost")
                self.stats.cycles += 1
                samples: list[tuple[OpcUaPoint, ua.DataValue]] = []
                while not queue.empty():
                    handle, dv = queue.get_nowait()
                    samples.append((points[handle - 1], dv))
                if polled:
                    samples += await self._read(client, points, nodes, polled)
                batch = placing.readings(samples, self.clock())
                if batch:
                    yield batch
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), conn.timeout_s)

    async def _resolve(self, client: Client) -> tuple[list[OpcUaPoint], list[Node], list[Reading]]:
        """The points whose namespace the server has, their nodes (indices as of now), and
        bad readings for the points whose namespace it does not know."""
        namespaces = await client.get_namespace_array()
        points, nodes, unknown = [], [], []
        for point in self.device.points:
            uri, kind, ident = parse_node(point.node)
            if uri not in namespaces:
                unknown.append((point, "BadNamespaceUnknown"))
                continue
            identifier: Any = (
                int(ident)
                if kind == "i"
                else uuid.UUID(ident)
                if kind == "g"
                else bytes.fromhex(ident)
                if kind == "b"
                else ident
            )
            nodes.append(
                client.get_node(
                    ua.NodeId(identifier, ua.Int16(namespaces.index(uri)), _ID_TYPES[kind])
                )
            )
            points.append(point)
        return points, nodes, self._refuse(unknown) if unknown else []

    def _refuse(self, refused: list[tuple[OpcUaPoint, str]]) -> list[Reading]:
        """Report points the server refuses, once each (log and status)."""
        out = []
        for point, reason in refused:
            if point.name not in self._reported:
                self._reported.add(point.name)
                self.stats.disabled_points.append(f"{point.name}: {reason}")
                log.error("%s: point %s (%s) refused: %s", self.meter_id, point.name,
                          point.node, reason)  # fmt: skip
            out += self._bad([point], reason)
        return out

    def _item(
        self, index: int, point: OpcUaPoint, node: Node, interval_ms: float
    ) -> ua.MonitoredItemCreateRequest:
        params = ua.MonitoringParameters()
        params.ClientHandle = index + 1
        params.SamplingInterval = (
            point.sampling_interval_ms if point.sampling_interval_ms is not None else interval_ms
        )
        params.QueueSize = point.queue_size
        params.DiscardOldest = True
        if point.deadband is not None:
            params.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=ua.DeadbandType.Absolute,
                DeadbandValue=float(point.deadband / point.scale),
            )
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(
            NodeId=node.nodeid, AttributeId=ua.UInt32(AttributeIds.Value)
        )
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    async def _read(
        self, client: Client, points: list[OpcUaPoint], nodes: list[Node], which: Sequence[int]
    ) -> list[tuple[OpcUaPoint, ua.DataValue]]:
        if not which:  # every point refused: a server answers an empty read BadNothingToDo
            return []
        values: list[ua.DataValue] = []
        for chunk in _chunks(which, self._per_read):  # the server's limit per read
            started = asyncio.get_running_loop().time()
            values += await client.uaclient.read(
                ua.ReadParameters(
                    NodesToRead=[
                        ua.ReadValueId(
                            NodeId=nodes[i].nodeid, AttributeId=ua.UInt32(AttributeIds.Value)
                        )
                        for i in chunk
                    ],
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                )
            )
            self.stats.requests += 1
            self.stats.latencies_s.append(asyncio.get_running_loop().time() - started)
        return [
            (points[i], dv)
            for i, dv in zip(which, values, strict=True)
            if points[i].name not in self._reported or not _bad(dv)
        ]


async def connect(
    conn: OpcUaConnection, on_lost: Callable[[Exception], Coroutine[Any, Any, None]] | None = None
) -> Client:
    """A session to the server as configured: security (with the trust check), user identity;
    `on_lost` is called when asyncua's watchdog finds the connection gone."""
    client = Client(conn.endpoint, timeout=conn.timeout_s, watchdog_intervall=conn.timeout_s)
    client.name = client.description = "tanji gateway"
    # a lost session is replaced, never resumed: ask for what servers commonly grant (asyncua's
    # one hour is revised down by most, with a warning at every connect)
    client.session_timeout = SESSION_TIMEOUT_MS
    if conn.username:
        client.set_user(conn.username)
        if conn.password_file:
            text = await asyncio.to_thread(Path(conn.password_file).read_text, "utf-8")
            client.set_password(text.rstrip("\r\n"))
    client.connection_lost_callback = on_lost
    if conn.security_policy != "None":
        await _secure(client, conn)
    if conn.user_certificate and conn.user_private_key:
        await client.load_client_certificate(conn.user_certificate)
        await client.load_private_key(Path(conn.user_private_key))
    await client.connect()
    return client


async def _secure(client: Client, conn: OpcUaConnection) -> None:
    """Sign (and encrypt) the channel with the gateway's certificate, towards a server
    whose certificate is in the trust folder (TrustError otherwise, naming it)."""
    assert conn.certificate is not None
    assert conn.private_key is not None
    assert conn.trust_dir is not None
    policy = POLICIES[conn.security_policy]
    mode = getattr(ua.MessageSecurityMode, conn.security_mode)
    endpoints = await client.connect_and_get_server_endpoints()
    offered = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
    if not offered:
        names = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints}
        )
        raise SecurityMismatch(
            f"the server offers no {conn.security_policy}/{conn.security_mode} endpoint"
            f" (it offers {', '.join(names)})"
        )
    server_der = first_certificate(offered[0].ServerCertificate)
    await asyncio.to_thread(check_trusted, server_der, Path(conn.trust_dir))
    own = await asyncio.to_thread(load_certificate, Path(conn.certificate))
    client.application_uri = application_uri_of(own) or client.application_uri
    await client.set_security(
        policy,
        certificate=conn.certificate,
        private_key=conn.private_key,
        server_certificate=server_der,
        mode=mode,
    )


OPERATION_LIMITS = (  # Server.ServerCapabilities.OperationLimits: per read, per call
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)


async def operation_limits(client: Client) -> tuple[int, int]:
    """The server's MaxNodesPerRead and MaxMonitoredItemsPerCall (OPC UA Part 5,
    OperationLimits; 0 where it sets none or does not say): a request over them is refused
    whole with BadTooManyOperations, so reads and subscriptions are split to fit."""
    found = []
    for limit_id in OPERATION_LIMITS:  # one at a time: a server may take a single node per read
        (dv,) = await client.read_attributes([client.get_node(ua.NodeId(ua.Int32(limit_id)))])
        v = _value(dv)
        found.append(v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0)
    per_read, per_call = found
    return per_read, per_call


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in slices of at most `size` (all at once when size is 0)."""
    if size <= 0:
        return [items]
    return [items[i : i + size] for i in range(0, len(items), size)]


def _value(dv: ua.DataValue) -> Any:
    return dv.Value.Value if dv.Value is not None else None


def _bad(dv: ua.DataValue) -> bool:
    return dv.StatusCode is not None and dv.StatusCode.is_bad()


def _reason(exc: BaseException) -> str:
    """A stable reason code for why the server could not be read."""
    if isinstance(exc, UaStatusCodeError):
        return status_name(ua.StatusCode(ua.UInt32(exc.code)))
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection-refused"
    if isinstance(exc, ConnectionError | OSError):
        return "connection-lost"
    return type(exc).__name__
