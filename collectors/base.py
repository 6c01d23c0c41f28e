"""The one interface every protocol adapter implements, and the registry that names them.

A collector turns a configured device into an endless async stream of Readings. It never
raises for device faults (those become `bad` readings with a reason) and knows nothing of
storage or MQTT. Its `stats` say how well it keeps its schedule (for status output).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.models import DeviceSpec, Reading

WallClock = Callable[[], int]
"""Returns the UTC wall-clock time in nanoseconds since the epoch (injectable for tests)."""

T = TypeVar("T")


@dataclass
class CollectorStats:
    """How one device's polling goes: counts since start, latency of recent requests."""

    cycles: int = 0
    overruns: int = 0  # scheduled cycles skipped because the previous one was still running
    requests: int = 0
    timeouts: int = 0
    retries: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)  # Modbus exceptions, by name
    bad_responses: Counter[str] = field(default_factory=Counter)  # answers unfit for the request
    disabled_points: list[str] = field(default_factory=list)
    # when a disabled point is asked again (UTC seconds), by name, where the protocol does so
    disabled_retry_at: dict[str, float] = field(default_factory=dict)
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def latency_ms(self, *quantiles: float) -> list[float | None]:
        """Latency of successful requests at each quantile (0..1) over the last 1024."""
        ordered = sorted(self.latencies_s)
        if not ordered:
            return [None] * len(quantiles)
        return [1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in quantiles]

    def snapshot(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles,
            "overruns": self.overruns,
            "requests": self.requests,
            "timeouts": self.timeouts,
            "retries": self.retries,
            "exceptions": dict(self.exceptions),
            "bad_responses": dict(self.bad_responses),
            "disabled_points": list(self.disabled_points),
            "disabled_retry_at": dict(self.disabled_retry_at),
            "latency_ms": dict(
                zip(("p50", "p95", "p99"), self.latency_ms(0.50, 0.95, 0.99), strict=True)
            ),
        }


class Collector(Protocol):
    """Reads one device; `stream()` yields each poll cycle's readings, forever."""

    meter_id: str
    stats: CollectorStats

    def stream(self) -> AsyncIterator[list[Reading]]: ...


class Shared:
    """What collectors of one gateway share (e.g. one serial bus for several meters), by key."""

    def __init__(self) -> None:
        self._items: dict[str, object] = {}

    def get(self, key: str, kind: type[T], factory: Callable[[], T]) -> T:
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = factory()
        if not isinstance(item, kind):
            raise TypeError(f"shared {key!r} is a {type(item).__name__}, not a {kind.__name__}")
        return item

    def close(self) -> None:
        for item in self._items.values():
            close = getattr(item, "close", None)
            if callable(close):
                close()
        self._items.clear()


@dataclass(frozen=True)
class CollectorType:
    """A protocol: the model its device configuration is validated with, its factory, and
    optional checks across devices and on this machine, and a human explanation of how a
    device will be read."""

    name: str
    device_model: type[DeviceSpec]
    create: Callable[[str, DeviceSpec, WallClock, Shared], Collector]
    check_devices: Callable[[Sequence[tuple[str, DeviceSpec]]], list[str]] = lambda _: []
    explain: Callable[[DeviceSpec], list[str]] = lambda _: []
    # what a device needs from this machine (files it reads): (field, problem) pairs
    deployment_problems: Callable[[DeviceSpec], list[tuple[str, str]]] = lambda _: []


_REGISTRY: dict[str, CollectorType] = {}


def register(collector_type: CollectorType) -> None:
    if collector_type.name in _REGISTRY:
        raise ValueError(f"collector {collector_type.name!r} registered twice")
    _REGISTRY[collector_type.name] = collector_type


def collector_types() -> dict[str, CollectorType]:
    return dict(_REGISTRY)


def create_collector(
    meter_id: str,
    device: DeviceSpec,
    clock: WallClock = time.time_ns,
    shared: Shared | None = None,
) -> Collector:
    return _REGISTRY[device.protocol].create(meter_id, device, clock, shared or Shared())
