"""Gets activity data to the platform: outbox, MQTT transport, platform contract v1.

Public surface used by the gateway; nothing here knows Modbus or OPC UA.
"""

from cloud_sync.contract import (
    Ack,
    AckStatus,
    ContractError,
    Topics,
    build_batch,
    parse_batch,
)
from cloud_sync.outbox import Outbox, OutboxError, OutboxStats, Parked, create_schema, enqueue
from cloud_sync.sync import CloudSync, SyncCounters
from cloud_sync.transport import MqttConfig, TransportError

__all__ = [
    "Ack",
    "AckStatus",
    "CloudSync",
    "ContractError",
    "MqttConfig",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "Parked",
    "SyncCounters",
    "Topics",
    "TransportError",
    "build_batch",
    "create_schema",
    "enqueue",
    "parse_batch",
]
