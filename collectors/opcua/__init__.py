"""OPC UA collectors: subscriptions (or polling) on nodes addressed by namespace URI."""

from collectors.base import CollectorType, register
from collectors.opcua.collector import OPERATION_LIMITS, OpcUaCollector, SecurityMismatch, connect
from collectors.opcua.config import OpcUaConnection, OpcUaDevice, OpcUaPoint, parse_node
from collectors.opcua.discover import Candidate, browse, site_fragment
from collectors.opcua.security import (
    ApplicationCertificate,
    TrustError,
    create_application_certificate,
    file_problems,
    load_certificate,
    thumbprint,
)
from gateway.models import DeviceSpec


def explain(device: DeviceSpec) -> list[str]:
    assert isinstance(device, OpcUaDevice)
    conn = device.connection
    lines = [
        f"{conn.endpoint}, security {conn.security_policy}/{conn.security_mode},"
        f" publishing every {conn.poll_interval_s} s"
    ]
    for p in device.points:
        how = (
            f"subscribed (sampling {p.sampling_interval_ms or conn.poll_interval_s * 1000:g} ms,"
            f" queue {p.queue_size}" + (f", deadband {p.deadband}" if p.deadband else "") + ")"
            if p.mode == "subscribe"
            else f"read every {conn.poll_interval_s} s"
        )
        lines.append(f"{p.name}: {p.node} {how}")
    return lines


def deployment_problems(device: DeviceSpec) -> list[tuple[str, str]]:
    assert isinstance(device, OpcUaDevice)
    return [(f"connection.{field}", problem) for field, problem in file_problems(device.connection)]


register(
    CollectorType(
        name="opcua",
        device_model=OpcUaDevice,
        create=OpcUaCollector.from_spec,
        explain=explain,
        deployment_problems=deployment_problems,
    )
)

__all__ = [
    "OPERATION_LIMITS",
    "ApplicationCertificate",
    "Candidate",
    "OpcUaCollector",
    "OpcUaConnection",
    "OpcUaDevice",
    "OpcUaPoint",
    "SecurityMismatch",
    "TrustError",
    "browse",
    "connect",
    "create_application_certificate",
    "load_certificate",
    "parse_node",
    "site_fragment",
    "thumbprint",
]
