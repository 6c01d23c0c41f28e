"""OPC UA configuration: nodes by namespace URI only, security needs its files, resolution."""

from __future__ import annotations

from decimal import Decimal

import pytest

from collectors.opcua.config import OpcUaConnection, OpcUaPoint, parse_node

POINT = {"quantity": "active_energy_import", "kind": "counter", "unit": "kWh"}


def test_nodes_are_addressed_by_namespace_uri_never_by_index():
    assert parse_node("nsu=urn:x:plant;s=Line1.Meter") == ("urn:x:plant", "s", "Line1.Meter")
    assert parse_node("nsu=http://x/UA/;i=2255") == ("http://x/UA/", "i", "2255")
    with pytest.raises(ValueError, match="indices may change when the server restarts"):
        parse_node("ns=2;s=Line1.Meter")
    with pytest.raises(ValueError, match="not like nsu="):
        parse_node("nsu=urn:x")
    with pytest.raises(ValueError, match=r"0\.\.4294967295"):
        parse_node("nsu=urn:x;i=abc")


def test_a_counter_takes_no_deadband_and_resolution_follows_the_type():
    with pytest.raises(ValueError, match="a counter takes no deadband"):
        OpcUaPoint.model_validate({**POINT, "node": "nsu=u;s=e", "deadband": 1})
    double = OpcUaPoint.model_validate({**POINT, "node": "nsu=u;s=e"})
    assert double.resolution(Decimal(1000)) == Decimal(2) ** -43  # float64 at 1000
    wh = OpcUaPoint.model_validate(
        {**POINT, "node": "nsu=u;s=e", "data_type": "integer", "scale": "0.001"}
    )
    assert wh.resolution(Decimal(5)) == Decimal("0.001")  # a Wh integer counter


def test_security_needs_certificate_key_and_trust_folder():
    base = {"endpoint": "opc.tcp://127.0.0.1:4840/p"}
    with pytest.raises(ValueError, match="needs certificate, private_key, trust_dir"):
        OpcUaConnection.model_validate(
            {**base, "security_policy": "Basic256Sha256", "security_mode": "Sign"}
        )
    with pytest.raises(ValueError, match="both None or neither"):
        OpcUaConnection.model_validate({**base, "security_mode": "Sign"})
    with pytest.raises(ValueError, match="no credentials in the endpoint"):
        OpcUaConnection.model_validate({"endpoint": "opc.tcp://u:p@127.0.0.1:4840/p"})
