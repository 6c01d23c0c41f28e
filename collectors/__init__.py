"""Protocol adapters: devices in, Readings out. Public surface of the collectors package.

Each protocol is one module registered by name; the gateway uses only what is exported here.
"""

from collectors import modbus as _modbus  # noqa: F401  (registers the modbus_* protocols)
from collectors import opcua as _opcua  # noqa: F401  (registers opcua)
from collectors.base import (
    Collector,
    CollectorStats,
    CollectorType,
    Shared,
    WallClock,
    collector_types,
    create_collector,
)

__all__ = [
    "Collector",
    "CollectorStats",
    "CollectorType",
    "Shared",
    "WallClock",
    "collector_types",
    "create_collector",
]
