"""Signed acks: the platform signs (ECDSA P-256 over RFC 8785 canonical JSON), the gateway
believes only what its platform key verifies for itself. Forged `accepted` acks do not mark a
batch delivered, forged `rejected` ones do not dead-letter it, an old rejection played back
after a retry does not either; the documented test vector verifies, with OpenSSL too."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync import Ack, AckStatus, DeliveryConfig, MqttConfig, Outbox, Topics, TransportError
from cloud_sync.acks import AckKeys, AckRefused, AckSigner, read_ack, signed_body
from cloud_sync.sync import CloudSync, InboundMessage
from simulators.platform import ack_signer, public_key_path

USCC = "91320000MA1TANJ0D7"
GW = "demo-gw"
BID = "ab" * 32
PLATFORM = AckSigner.generate()
MALLORY = AckSigner.generate()
KEYS = AckKeys.from_pem(PLATFORM.public_pem())
DOC = Path(__file__).parents[2] / "docs" / "platform-contract.md"


def signed(
    status: AckStatus = AckStatus.ACCEPTED,
    reason: str | None = None,
    issued_ns: int = 1_000,
    signer: AckSigner = PLATFORM,
    bid: str = BID,
    gateway: tuple[str, str] = (USCC, GW),
) -> bytes:
    return signer.sign(Ack(bid, status, reason), *gateway, issued_ns)


def unsigned(status: str = "accepted", reason: str | None = None, bid: str = BID) -> bytes:
    message = {"schema": "tanji.ack/1", "batch_id": bid, "status": status}
    if reason is not None:
        message["reason"] = reason
    return json.dumps(message).encode()


def tampered(payload: bytes, **changes: str) -> bytes:
    """The signed ack with members changed after signing (the signature kept)."""
    return json.dumps(json.loads(payload) | changes).encode()


# --- read_ack with the platform's key --------------------------------------------------------


def test_a_signed_ack_is_read_with_when_it_was_issued():
    payload = signed(AckStatus.REJECTED, "unknown meter M9 (计量器具)", 1795630705123456789)
    ack = read_ack(payload, USCC, GW, KEYS)
    assert ack == Ack(BID, AckStatus.REJECTED, "unknown meter M9 (计量器具)", 1795630705123456789)
    assert len(payload) < 2000


FORGED = {
    "unsigned (version 1)": (unsigned(), "unauthenticated"),
    "signed with another key": (signed(signer=MALLORY), "unauthenticated"),
    "another key claiming the platform's key id": (
        tampered(signed(signer=MALLORY), key_id=PLATFORM.key_id),
        "unauthenticated",
    ),
    "rejected turned into accepted": (
        tampered(signed(AckStatus.REJECTED, "no"), status="duplicate"),
        "unauthenticated",
    ),
    "accepted for another batch": (tampered(signed(), batch_id="cd" * 32), "unauthenticated"),
    "reason changed": (tampered(signed(AckStatus.REJECTED, "a"), reason="b"), "unauthenticated"),
    "issued later": (tampered(signed(), issued_ns="99999"), "unauthenticated"),
    "signature not base64": (tampered(signed(), signature="!" * 96), "malformed"),
    "signature of other bytes": (
        tampered(signed(), signature=json.loads(signed(bid="cd" * 32))["signature"]),
        "unauthenticated",
    ),
    "signature garbage": (
        tampered(signed(), signature=base64.b64encode(b"\x30" * 70).decode()),
        "unauthenticated",
    ),
    "for another gateway": (signed(gateway=(USCC, "gw-2")), "misaddressed"),
    "for another enterprise": (signed(gateway=("91350100M000100Y43", GW)), "misaddressed"),
    "signature missing": (
        json.dumps({k: v for k, v in json.loads(signed()).items() if k != "signature"}).encode(),
        "malformed",
    ),
}


@pytest.mark.parametrize("name", FORGED)
def test_forged_or_foreign_acks_are_refused(name: str):
    payload, kind = FORGED[name]
    with pytest.raises(AckRefused) as refused:
        read_ack(payload, USCC, GW, KEYS)
    assert refused.value.kind == kind, refused.value


def test_without_a_key_unsigned_acks_are_believed_but_not_other_gateways_signed_ones():
    assert read_ack(unsigned(), USCC, GW) == Ack(BID, AckStatus.ACCEPTED)
    assert read_ack(signed(issued_ns=5), USCC, GW).issued_ns == 5
    with pytest.raises(AckRefused, match="misaddressed"):
        read_ack(signed(gateway=(USCC, "gw-2")), USCC, GW)


ORIGINAL = signed(AckStatus.REJECTED, "cause", 123456789)  # once: signatures are randomised


@given(st.data())
@settings(max_examples=300)
def test_any_change_to_a_signed_ack_is_refused_or_changes_nothing(data: st.DataObject):
    original = ORIGINAL
    expected = read_ack(original, USCC, GW, KEYS)
    payload = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    try:
        ack = read_ack(bytes(payload), USCC, GW, KEYS)
    except AckRefused:
        return
    assert ack == expected  # e.g. whitespace between members changed


# --- the key file ----------------------------------------------------------------------------


def test_key_files_with_one_or_more_keys_and_what_is_refused(tmp_path: Path):
    rollover = tmp_path / "keys.pem"
    rollover.write_bytes(b"platform keys\n" + PLATFORM.public_pem() + MALLORY.public_pem())
    keys = MqttConfig(platform_ack_key=rollover).ack_keys()
    assert keys is not None
    assert set(keys.keys) == {PLATFORM.key_id, MALLORY.key_id}
    assert read_ack(signed(signer=MALLORY), USCC, GW, keys).batch_id == BID

    def refused(content: bytes | None, match: str) -> None:
        path = tmp_path / "key.pem"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(TransportError, match=match) as error:
            MqttConfig(platform_ack_key=path).ack_keys()
        assert str(path) in str(error.value)

    refused(None, "No such file")
    refused(b"not a key", "holds no PEM public key")
    refused(PLATFORM.private_pem(), "holds no PEM public key")  # the private half by mistake
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    refused(
        p384.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "not an ECDSA P-256",
    )
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    refused(
        rsa_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "not an ECDSA P-256",
    )
    refused(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "cannot be read")


def test_unsigned_acks_only_with_a_broker_on_this_machine(tmp_path: Path):
    for url in ("mqtt://127.0.0.1:1883", "mqtts://localhost:8883", "mqtt://[::1]:1883"):
        assert MqttConfig(broker_url=url).unsigned_acks_problem() is None
    remote = MqttConfig(broker_url="mqtts://platform.example.cn:8883")
    assert "is required: the broker platform.example.cn is not on this machine" in (
        remote.unsigned_acks_problem() or ""
    )
    with_key = MqttConfig(broker_url=remote.broker_url, platform_ack_key=tmp_path / "k.pem")
    assert with_key.unsigned_acks_problem() is None


def test_the_simulator_keeps_its_key_and_writes_the_public_half(tmp_path: Path):
    path = tmp_path / "keys" / "platform-ack.key"
    first = ack_signer(path)
    assert path.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert ack_signer(path).key_id == first.key_id  # kept across restarts
    public = public_key_path(path)
    assert public.name == "platform-ack.pub.pem"
    assert AckKeys.from_pem(public.read_bytes()).keys.keys() == {first.key_id}
    path.write_text("junk")
    with pytest.raises(ValueError, match=f"ack signing key {path}"):
        ack_signer(path)


# --- the outbox: forged and played-back verdicts settle nothing ---------------------------------


def gateway(tmp_path: Path, keyed: bool = True) -> tuple[CloudSync, Path]:
    db = tmp_path / "gw.db"
    key = tmp_path / "platform.pub.pem"
    key.write_bytes(PLATFORM.public_pem())
    config = MqttConfig(platform_ack_key=key if keyed else None)
    sync = CloudSync(db, Topics("tanji/v1", USCC, GW), config, "gw", delivery=DeliveryConfig())
    for bid in ("a1" * 32, "b2" * 32, "c3" * 32):
        sync._conn.execute(
            "INSERT INTO outbox (batch_id, payload, record_count, created_ns) VALUES (?,?,?,?)",
            (bid, b"{}", 1, 1),
        )
    return sync, db


def state(db: Path, bid: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("SELECT state FROM outbox WHERE batch_id=?", (bid,)).fetchone()[0])
    finally:
        conn.close()


def deliver(sync: CloudSync, *payloads: bytes) -> None:
    topic = sync.topics.ack
    asyncio.run(sync.settle_acks([InboundMessage(topic, p) for p in payloads]))


def test_forged_acks_for_real_batches_settle_nothing(tmp_path: Path):
    sync, db = gateway(tmp_path)
    a, b, c = "a1" * 32, "b2" * 32, "c3" * 32
    deliver(
        sync,
        unsigned("accepted", bid=a),  # read off .../activity, "accepted" by someone
        signed(signer=MALLORY, bid=a),
        unsigned("rejected", "forged", bid=b),
        signed(AckStatus.REJECTED, "forged", signer=MALLORY, bid=b),
        tampered(signed(AckStatus.ACCEPTED, bid=c), batch_id=b),
        signed(bid=a, gateway=(USCC, "gw-2")),  # the platform's genuine ack for another gateway
    )
    assert [state(db, x) for x in (a, b, c)] == ["pending"] * 3
    assert sync.counters.acks == 0
    assert sync.counters.acks_authenticated
    assert sync.counters.acks_dropped == {"unauthenticated": 5, "misaddressed": 1}
    # the platform's own verdicts do settle them
    deliver(sync, signed(bid=a), signed(AckStatus.REJECTED, "unknown meter", bid=b))
    assert [state(db, x) for x in (a, b, c)] == ["acked", "rejected", "pending"]


def test_without_a_key_the_same_forgery_would_have_settled_batches(tmp_path: Path):
    """Why the key is required off this machine: unsigned acks are believed."""
    sync, db = gateway(tmp_path, keyed=False)
    deliver(sync, unsigned("accepted", bid="a1" * 32), unsigned("rejected", "x", bid="b2" * 32))
    assert [state(db, x) for x in ("a1" * 32, "b2" * 32)] == ["acked", "rejected"]
    assert not sync.counters.acks_authenticated


def test_an_old_rejection_played_back_after_a_retry_is_stale(tmp_path: Path):
    sync, db = gateway(tmp_path)
    bid = "a1" * 32
    first = signed(AckStatus.REJECTED, "meter M9 unknown", 1_000, bid=bid)
    deliver(sync, first)
    assert state(db, bid) == "rejected"
    outbox = Outbox(sqlite3.connect(db, isolation_level=None))
    outbox.retry(bid, 2_000)  # the operator fixed the platform's registry
    deliver(sync, first)  # recorded and played back
    assert state(db, bid) == "pending"
    assert sync.counters.acks_dropped == {"stale": 1}
    deliver(sync, signed(AckStatus.REJECTED, "meter M9 unknown", 999, bid=bid))  # older still
    assert state(db, bid) == "pending"
    deliver(sync, signed(AckStatus.REJECTED, "still unknown", 1_001, bid=bid))  # a new verdict
    assert state(db, bid) == "rejected"
    outbox.retry(bid, 3_000)
    deliver(sync, signed(bid=bid, issued_ns=500))  # an accepted ack is true whenever issued
    assert state(db, bid) == "acked"


def test_an_outbox_made_before_verdicts_were_kept_is_migrated(tmp_path: Path):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE,"
        " payload BLOB NOT NULL, record_count INTEGER NOT NULL, state TEXT NOT NULL DEFAULT"
        " 'pending', attempts INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL,"
        " last_sent_ns INTEGER, acked_ns INTEGER, ack_status TEXT, reason TEXT)"
    )
    conn.execute(
        "INSERT INTO outbox (batch_id, payload, record_count, created_ns) VALUES ('x', '{}', 1, 1)"
    )
    outbox = Outbox(conn)
    assert outbox.apply_acks([Ack("x", AckStatus.REJECTED, "r", 7)], 10) == ["settled"]
    assert conn.execute("SELECT verdict_ns FROM outbox").fetchone() == (7,)
    Outbox(conn)  # a second open leaves it as it is


# --- the documented test vector ------------------------------------------------------------


def doc_vector() -> tuple[bytes, bytes, bytes]:
    """(public key PEM, the ack as published, the signed bytes) from the contract's text."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("Test vector") : text.index("### Broker ACL")]
    public = re.search(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----\n", section, re.S)
    published = re.search(r'^\{"schema": "tanji.ack/2".*\}$', section, re.M)
    body = re.search(r'^\{"batch_id":.*\}$', section, re.M)
    assert public
    assert published
    assert body
    return public.group().encode(), published.group().encode(), body.group().encode()


def test_the_documented_test_vector_verifies():
    public, published, body = doc_vector()
    keys = AckKeys.from_pem(public)
    ack = read_ack(published, USCC, GW, keys)
    assert ack.status is AckStatus.REJECTED
    assert ack.issued_ns == 1795630705123456789
    message = json.loads(published)
    assert (
        signed_body(message)
        == body
        == rfc8785.dumps({k: v for k, v in message.items() if k != "signature"})
    )
    assert message["key_id"] in keys.keys


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_the_documented_test_vector_verifies_with_openssl(tmp_path: Path):
    public, published, body = doc_vector()
    (tmp_path / "pub.pem").write_bytes(public)
    (tmp_path / "body.json").write_bytes(body)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(json.loads(published)["signature"]))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "body.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "Verified OK", result.stderr


def test_check_config_wants_the_key_for_a_broker_elsewhere(tmp_path: Path):
    from typer.testing import CliRunner

    from gateway.cli import app

    example = (Path(__file__).parents[2] / "deploy" / "site.example.toml").read_text()
    example = example.replace('path = "tanji.db"', f'path = "{tmp_path / "tanji.db"}"')

    def check(text: str) -> tuple[int, str]:
        site = tmp_path / "site.toml"
        site.write_text(text)
        result = CliRunner().invoke(app, ["check-config", str(site)])
        return result.exit_code, " ".join(result.output.split())

    code, out = check(example)  # the example's broker is on this machine
    assert code == 0, out
    assert "platform_ack_key is not set: the platform's acks are not authenticated" in out
    remote = example.replace("mqtt://127.0.0.1:1883", "mqtts://platform.example.cn:8883")
    code, out = check(remote)
    assert code == 2
    assert "mqtt.platform_ack_key: is required: the broker platform.example.cn is not" in out
    key = tmp_path / "platform.pub.pem"
    keyed = remote.replace(
        'topic_prefix = "tanji/v1"', f'topic_prefix = "tanji/v1"\nplatform_ack_key = "{key}"'
    )
    code, out = check(keyed)
    assert code == 2
    assert f"platform_ack_key {key}: No such file" in out
    key.write_bytes(PLATFORM.public_pem())
    code, out = check(keyed)
    assert code == 0, out
    assert "not authenticated" not in out
