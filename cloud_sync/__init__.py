"""Gets activity data to the platform: outbox, delivery, transports, platform contract v1.

Delivery (outbox, window, acks, backlog lanes, the raw readings stream) is transport-neutral
and talks to the platform through one small interface (`Transport`, made by a `LinkConfig`);
MQTT and HTTPS are the transports. Public surface used by the gateway and the simulators;
nothing here knows Modbus or OPC UA, and nothing outside cloud_sync imports its submodules.
"""

from cloud_sync.acks import AckKeys, AckRefused, AckSigner, read_ack
from cloud_sync.contract import (
    Ack,
    AckStatus,
    ContractError,
    Topics,
    build_batch,
    build_readings_batch,
    load_json,
    parse_batch,
    parse_readings_batch,
    reading_message,
    validate,
)
from cloud_sync.https import HttpsConfig
from cloud_sync.identity import ClientRequest, IdentityError, create_client_request
from cloud_sync.mqtt import MqttConfig
from cloud_sync.outbox import (
    SETTLED_BATCHES,
    Outbox,
    OutboxError,
    OutboxStats,
    create_schema,
    enqueue,
)
from cloud_sync.policy import (
    LEGACY_POLICY_KEYS,
    DeliveryConfig,
    LegacyPolicy,
    PlatformConfig,
    legacy_policy,
)
from cloud_sync.sync import CloudSync, ReadingsSource
from cloud_sync.transport import (
    BatchRefused,
    InboundMessage,
    LinkConfig,
    Outgoing,
    StatusMessage,
    Transport,
    TransportError,
)

__all__ = [
    "LEGACY_POLICY_KEYS",
    "SETTLED_BATCHES",
    "Ack",
    "AckKeys",
    "AckRefused",
    "AckSigner",
    "AckStatus",
    "BatchRefused",
    "ClientRequest",
    "CloudSync",
    "ContractError",
    "DeliveryConfig",
    "HttpsConfig",
    "IdentityError",
    "InboundMessage",
    "LegacyPolicy",
    "LinkConfig",
    "MqttConfig",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "Outgoing",
    "PlatformConfig",
    "ReadingsSource",
    "StatusMessage",
    "Topics",
    "Transport",
    "TransportError",
    "build_batch",
    "build_readings_batch",
    "create_client_request",
    "create_schema",
    "enqueue",
    "legacy_policy",
    "load_json",
    "parse_batch",
    "parse_readings_batch",
    "read_ack",
    "reading_message",
    "validate",
]
