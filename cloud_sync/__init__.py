"""Gets activity data to the platform: outbox, MQTT transport, platform contract v1.

Public surface used by the gateway; nothing here knows Modbus or OPC UA.
"""

from cloud_sync.contract import (
    Ack,
    AckStatus,
    ContractError,
    Topics,
    build_batch,
    build_readings_batch,
    parse_batch,
    parse_readings_batch,
    reading_message,
)
from cloud_sync.outbox import (
    SETTLED_BATCHES,
    Outbox,
    OutboxError,
    OutboxStats,
    Parked,
    create_schema,
    enqueue,
)
from cloud_sync.sync import CloudSync, ReadingsSource, SyncCounters
from cloud_sync.transport import MqttConfig, TransportError

__all__ = [
    "SETTLED_BATCHES",
    "Ack",
    "AckStatus",
    "CloudSync",
    "ContractError",
    "MqttConfig",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "Parked",
    "ReadingsSource",
    "SyncCounters",
    "Topics",
    "TransportError",
    "build_batch",
    "build_readings_batch",
    "create_schema",
    "enqueue",
    "parse_batch",
    "parse_readings_batch",
    "reading_message",
]
