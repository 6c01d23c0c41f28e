"""The one interface every protocol adapter implements, and the registry that names them.

A collector turns a configured device into an endless async stream of Readings. It never
raises for device faults (those become `bad` readings with a reason) and knows nothing of
storage or MQTT.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.models import DeviceSpec, Reading

WallClock = Callable[[], int]
"""Returns the UTC wall-clock time in nanoseconds since the epoch (injectable for tests)."""


class Collector(Protocol):
    """Reads one device; `stream()` yields each poll cycle's readings, forever."""

    meter_id: str

    def stream(self) -> AsyncIterator[list[Reading]]: ...


@dataclass(frozen=True)
class CollectorType:
    """A protocol: the model its device configuration is validated with and its factory."""

    name: str
    device_model: type[DeviceSpec]
    create: Callable[[str, DeviceSpec, WallClock], Collector]


_REGISTRY: dict[str, CollectorType] = {}


def register(collector_type: CollectorType) -> None:
    if collector_type.name in _REGISTRY:
        raise ValueError(f"collector {collector_type.name!r} registered twice")
    _REGISTRY[collector_type.name] = collector_type


def collector_types() -> dict[str, CollectorType]:
    return dict(_REGISTRY)


def create_collector(
    meter_id: str, device: DeviceSpec, clock: WallClock = time.time_ns
) -> Collector:
    return _REGISTRY[device.protocol].create(meter_id, device, clock)
