"""OPC UA configuration: nodes by namespace URI only, security needs its files, resolution."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

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


def test_guid_and_opaque_identifiers_are_checked():
    assert parse_node("nsu=u;g=72962b91-fa75-4ae6-8d28-b404dc7daf63")[1] == "g"
    assert parse_node("nsu=u;b=0a0bff")[2] == "0a0bff"
    with pytest.raises(ValueError, match="GUID"):
        parse_node("nsu=u;g=not-a-guid")
    with pytest.raises(ValueError, match="hex bytes"):
        parse_node("nsu=u;b=xyz")


def test_a_password_login_needs_a_secure_channel():
    with pytest.raises(ValueError, match="password may go in clear"):
        OpcUaConnection.model_validate(
            {"endpoint": "opc.tcp://127.0.0.1:4840/p", "username": "operator"}
        )
    with pytest.raises(ValueError, match=r"port must be 1\.\.65535"):
        OpcUaConnection.model_validate({"endpoint": "opc.tcp://127.0.0.1:99999/p"})


def test_status_names_ignore_info_bits_and_certificates_are_cut_from_chains():
    from asyncua import ua

    from collectors.opcua.collector import first_certificate, status_name

    assert status_name(ua.StatusCode(ua.UInt32(0x80050400))) == "BadCommunicationError"
    assert status_name(ua.StatusCode(ua.UInt32(0x80050000))) == "BadCommunicationError"
    short = bytes([0x30, 0x03, 1, 2, 3])
    assert first_certificate(short + b"\x30\x01\x00") == short
    long = bytes([0x30, 0x81, 0x80]) + bytes(0x80)
    assert first_certificate(long + short) == long
    with pytest.raises(ValueError, match="no certificate"):
        first_certificate(b"")


def test_label_points_are_text_without_deadband_or_scale():
    code = OpcUaPoint.model_validate({"quantity": "product_code", "node": "nsu=u;s=p"})
    assert (code.kind, code.unit) == ("label", "")
    with pytest.raises(ValueError, match="takes no deadband or scale"):
        OpcUaPoint.model_validate({"quantity": "product_code", "node": "nsu=u;s=p", "scale": 2})


def test_a_data_value_becomes_a_reading_with_both_timestamps_and_a_labels_text():
    from datetime import UTC, datetime

    from asyncua import ua

    from collectors.opcua.collector import reading_of

    code = OpcUaPoint.model_validate({"quantity": "product_code", "node": "nsu=u;s=p"})
    energy = OpcUaPoint.model_validate({**POINT, "node": "nsu=u;s=e"})
    src, srv = datetime(2026, 12, 7, 1, 0, tzinfo=UTC), datetime(2026, 12, 7, 1, 0, 1, tzinfo=UTC)

    def dv(value, variant_type, status=ua.StatusCodes.Good):
        return ua.DataValue(
            Value=ua.Variant(value, variant_type),
            StatusCode=ua.StatusCode(ua.UInt32(status)),
            SourceTimestamp=src,
            ServerTimestamp=srv,
        )

    r = reading_of("P1", code, dv("BAT-48V", ua.VariantType.String), 7)
    assert (r.text, r.value, r.quality.status) == ("BAT-48V", None, "good")
    assert r.source_ts_ns == int(src.timestamp()) * 1_000_000_000
    assert r.server_ts_ns == r.source_ts_ns + 1_000_000_000
    assert r.raw == bytes([12, 7, 0, 0, 0]) + b"BAT-48V"  # String variant: type, length, bytes
    recipe = reading_of("P1", code, dv(4711, ua.VariantType.Int32), 7)
    assert recipe.text == "4711"
    assert reading_of("P1", code, dv(1.5, ua.VariantType.Double), 7).quality.reason == "not-a-text"
    padded = reading_of("P1", code, dv("CELL-A\x00\x00\x00", ua.VariantType.String), 7)
    assert padded.text == "CELL-A"  # a PLC's char array: the string ends at its first NUL
    assert padded.raw.endswith(b"CELL-A\x00\x00\x00")  # the padding stays in the evidence
    gbk = reading_of("P1", code, dv("电池".encode("gbk").decode("utf-8", "surrogateescape"),
                                    ua.VariantType.String), 7)  # fmt: skip
    assert (gbk.text, gbk.quality.reason) == (None, "text-not-utf8")
    two_lines = reading_of("P1", code, dv("A\nB", ua.VariantType.String), 7)
    assert two_lines.quality.reason == "text-with-control-characters"
    assert reading_of("P1", code, dv("电池包-48V", ua.VariantType.String), 7).text == "电池包-48V"
    long = reading_of("P1", code, dv("x" * 300, ua.VariantType.String), 7)
    assert (long.text, long.quality.reason) == (None, "text-too-long")
    assert len(long.raw) == 305  # kept whole as evidence
    text_energy = reading_of("P1", energy, dv("12", ua.VariantType.String), 7)
    assert text_energy.quality.reason == "not-a-number"
    n = reading_of("P1", energy, dv(12.5, ua.VariantType.Double), 7)
    assert (n.value, n.text, n.server_ts_ns is not None) == (Decimal("12.5"), None, True)


@pytest.mark.parametrize(
    ("name", "quantity"),
    [
        ("ProductCode", "product_code"),
        ("SKU", "product_code"),
        ("recipe_name", "product_code"),
        ("ProductionOrder", "production_order"),
        ("BatchID", "production_order"),
        ("DepartmentName", None),  # "part" inside another word names nothing
        ("Pilot", None),
        ("SlotName", None),
    ],
)
def test_discover_proposes_text_variables_named_like_products_or_orders(name, quantity):
    from collectors.opcua.discover import guess

    assert guess(name, "String", None)[0] == quantity
    assert guess(name, "Double", None)[0] != quantity or quantity is None


def test_check_config_and_run_read_the_opcua_files_first(tmp_path: Path):
    """A missing certificate, a key that is not one, a trust folder that is not there and an
    empty password file are found before deployment (gateway.config.check_site, used by both
    `tanji check-config` and `tanji run`), each with its field; the same files made by
    `tanji keys opcua` pass."""
    import tomllib

    import tomli_w

    from collectors.opcua.security import create_application_certificate
    from gateway.config import ConfigError, check_site

    example = tomllib.loads(
        (Path(__file__).parents[2] / "deploy" / "site.example.toml").read_text()
    )
    made = create_application_certificate(tmp_path / "pki", "gw")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "password").write_text("secret\n")
    good = {
        "endpoint": "opc.tcp://127.0.0.1:4840/p",
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": str(made.certificate),
        "private_key": str(made.private_key),
        "trust_dir": str(tmp_path / "trusted"),
        "username": "operator",
        "password_file": str(tmp_path / "password"),
    }

    def site(connection: dict) -> object:
        data = {**example, "store": {"path": str(tmp_path / "g.db")}}
        data["meters"] = [
            {
                **{
                    k: v
                    for k, v in example["meters"][0].items()
                    if k not in ("connection", "profile", "profile_points", "points")
                },
                "protocol": "opcua",
                "connection": connection,
                "points": [{**POINT, "node": "nsu=urn:x;s=E"}],
            }
        ]
        path = tmp_path / "site.toml"
        path.write_text(tomli_w.dumps(data))
        return check_site(path)

    site(good)  # no problem
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        site(
            {
                **good,
                "certificate": str(tmp_path / "absent.der"),
                "private_key": str(tmp_path / "password"),
                "trust_dir": str(tmp_path / "nowhere"),
                "password_file": str(tmp_path / "empty"),
            }
        )
    problems = "\n".join(str(p) for p in caught.value.problems)
    assert "meters[0].connection.certificate: cannot read" in problems
    assert "meters[0].connection.private_key:" in problems
    assert "is not a PEM private key" in problems
    assert "meters[0].connection.trust_dir:" in problems
    assert "meters[0].connection.password_file:" in problems
    assert "is empty" in problems
