"""The ack reader cannot be stopped: whatever arrives on the ack topic (any bytes, any JSON,
huge numbers, lone surrogates, 10 MB, retained) is either a well-formed ack (with the
platform's key: a signed one) or counted, logged once with a bounded excerpt and dropped,
and the valid acks of the same pass still settle their batches. Fuzzed with hypothesis
against a real SQLite outbox."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_sync import Ack, AckStatus, DeliveryConfig, MqttConfig, Topics
from cloud_sync.acks import MAX_ACK_BYTES, AckKeys, AckRefused, AckSigner, read_ack
from cloud_sync.sync import CloudSync, InboundMessage, LogBudget

USCC = "91320000MA1TANJ0D7"
GW = "gw"
KEYS = AckKeys.from_pem(AckSigner.generate().public_pem())
TOPICS = Topics("tanji/v1", USCC, GW)


def v1(batch_id: Any, status: Any = "accepted", **extra: Any) -> bytes:
    return json.dumps(
        {"schema": "tanji.ack/1", "batch_id": batch_id, "status": status, **extra}
    ).encode()


# --- read_ack: one message -----------------------------------------------------------------

POISON = {
    "not JSON": (b"{not json", "malformed"),
    "not UTF-8": (b'{"schema": "tanji.ack/1", "batch_id": "\xff"}', "malformed"),
    "not an object": (b"[1, 2, 3]", "malformed"),
    "a bare string": (b'"accepted"', "malformed"),
    "null": (b"null", "malformed"),
    "5000-digit number": (
        b'{"schema": "tanji.ack/1", "batch_id": ' + b"9" * 5000 + b"}",
        "malformed",
    ),
    "5000-digit float": (b'{"x": 1.' + b"5" * 5000 + b"e99999}", "malformed"),
    "NaN": (b'{"schema": "tanji.ack/1", "batch_id": NaN, "status": "accepted"}', "malformed"),
    "deep nesting": (b"[" * 5000 + b"]" * 5000, "malformed"),
    "lone surrogate in batch_id": (v1("\udc00"), "malformed"),
    "lone surrogate in reason": (v1("b1", "rejected", reason="\ud800 bad"), "malformed"),
    "lone surrogate as a key": (b'{"\\udfff": 1, "schema": "tanji.ack/1"}', "malformed"),
    "batch_id a number": (v1(12), "malformed"),
    "status unknown": (v1("b1", "maybe"), "malformed"),
    "rejected without reason": (v1("b1", "rejected"), "malformed"),
    "reason an object": (v1("b1", "rejected", reason={"a": 1}), "malformed"),
    "extra field": (v1("b1", extra=1), "malformed"),
    "another schema": (b'{"schema": "tanji.status/1"}', "malformed"),
    "schema a list": (b'{"schema": []}', "malformed"),
    "empty": (b"", "malformed"),
    "batch_id too long": (v1("b" * 129), "malformed"),
    "10 MB": (v1("b1", reason="x" * 10_000_000), "oversized"),
    "just over the limit": (b" " * (MAX_ACK_BYTES - len(v1("b1")) + 1) + v1("b1"), "oversized"),
}


@pytest.mark.parametrize("name", POISON)
def test_each_kind_of_poison_is_refused_by_name(name: str):
    payload, kind = POISON[name]
    with pytest.raises(AckRefused) as refused:
        read_ack(payload, USCC, GW)
    assert refused.value.kind == kind, refused.value


def test_a_well_formed_ack_at_the_size_limit_is_read():
    payload = v1("b1", "rejected", reason="r")
    padded = b" " * (MAX_ACK_BYTES - len(payload)) + payload
    assert read_ack(padded, USCC, GW) == Ack("b1", AckStatus.REJECTED, "r")
    reason = "计量点 M1 未登记 ✗"  # text beyond ASCII is text
    assert read_ack(v1("b1", "rejected", reason=reason), USCC, GW).reason == reason


def _is_text(value: Any) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(st.binary(max_size=2 * MAX_ACK_BYTES))
@settings(max_examples=500)
def test_any_bytes_are_an_ack_or_refused(payload: bytes):
    for keys in (None, KEYS):
        try:
            ack = read_ack(payload, USCC, GW, keys)
        except AckRefused:
            continue
        assert _is_text(ack.batch_id)


# any JSON value, with the strings JSON can spell (lone surrogates included) and integers of
# any length; and ack-shaped objects whose fields hold any of them
json_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=40)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.builds(pow, st.sampled_from([10, -2]), st.integers(60, 20_000))  # 2**63, 5000 digits
    | st.floats(allow_nan=True, allow_infinity=True)
    | json_text
    | st.sampled_from(["accepted", "duplicate", "rejected", "tanji.ack/1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=20,
)
ack_shaped = st.fixed_dictionaries(
    {
        "schema": st.sampled_from(["tanji.ack/1"]) | json_values,
        "batch_id": st.text(min_size=1, max_size=130) | json_text | json_values,
        "status": st.sampled_from(["accepted", "duplicate", "rejected"]) | json_values,
    },
    optional={"reason": json_text | json_values, "extra": json_values},
)


def _dumps(value: Any) -> bytes:
    """JSON text of `value`, numbers of any size included (Python refuses to print integers
    of more than 4300 digits by default)."""
    import sys

    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        return json.dumps(value).encode()
    finally:
        sys.set_int_max_str_digits(old)


@given(json_values | ack_shaped)
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_is_an_ack_or_refused(message: Any):
    with pytest.raises(AckRefused):  # nothing unsigned passes with the platform's key
        read_ack(_dumps(message), USCC, GW, KEYS)
    try:
        ack = read_ack(_dumps(message), USCC, GW)
    except AckRefused:
        return
    assert isinstance(message, dict)
    assert ack.batch_id == message["batch_id"]
    assert _is_text(ack.batch_id)
    assert ack.reason is None or _is_text(ack.reason)


# --- settle_acks: a pass of the reader against a real outbox --------------------------------


def sync_with_batches(db: Path, n: int) -> tuple[CloudSync, list[str]]:
    sync = CloudSync(db, TOPICS, MqttConfig(), "gw", delivery=DeliveryConfig())
    ids = [f"{i:064x}" for i in range(1, n + 1)]
    for bid in ids:
        sync._conn.execute(
            "INSERT INTO outbox (batch_id, payload, record_count, created_ns) VALUES (?,?,?,?)",
            (bid, b"{}", 1, 1),
        )
    return sync, ids


def states(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT batch_id, state FROM outbox").fetchall())
    finally:
        conn.close()


def message(payload: bytes, retain: bool = False, topic: str = TOPICS.ack) -> InboundMessage:
    return InboundMessage(topic, payload, retain)


def test_poison_next_to_real_acks_in_one_pass(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    sync, ids = sync_with_batches(tmp_path / "gw.db", 4)
    real = [
        message(v1(ids[0])),
        message(v1(ids[1], "duplicate")),
        message(v1(ids[2], "rejected", reason="unknown meter")),
    ]
    poison = [message(p) for p, _ in POISON.values()] + [
        message(v1(ids[3]), retain=True),  # a retained leftover: never believed
        message(v1(ids[3]), topic="tanji/v1/other/gw/ack"),  # not our ack topic
        message(v1("f" * 64)),  # no such batch
    ]
    mixed = poison[:10] + real[:1] + poison[10:20] + real[1:] + poison[20:]
    with caplog.at_level(logging.WARNING, "cloud_sync.sync"):
        asyncio.run(sync.settle_acks(mixed))
    assert states(tmp_path / "gw.db") == {
        ids[0]: "acked",
        ids[1]: "acked",
        ids[2]: "rejected",
        ids[3]: "pending",
    }
    c = sync.counters
    assert (c.acks, c.duplicates, c.rejected) == (3, 1, 1)
    assert c.bad_acks == len(poison)
    assert c.acks_dropped == {
        "malformed": sum(kind == "malformed" for _, kind in POISON.values()),
        "oversized": 2,
        "retained": 1,
        "misaddressed": 1,
        "unknown-batch": 1,
    }
    assert c.snapshot()["acks_dropped"] == c.acks_dropped  # in the status file
    dropped = [r for r in caplog.records if "dropped a message on the ack topic" in r.message]
    assert len(dropped) == min(len(poison), LogBudget().burst)  # once each, within the budget
    assert all(len(r.getMessage()) < 1000 for r in dropped)  # 10 MB made a short line
    assert all("\n" not in r.getMessage() for r in dropped)


def test_a_flood_of_poison_is_logged_within_a_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    sync, ids = sync_with_batches(tmp_path / "gw.db", 1)
    now = [0.0]
    sync._drop_log = LogBudget(burst=5, window_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "cloud_sync.sync"):
        asyncio.run(sync.settle_acks([message(b"junk")] * 100 + [message(v1(ids[0]))]))
        now[0] = 61.0
        asyncio.run(sync.settle_acks([message(b"more junk")]))
    lines = [r.getMessage() for r in caplog.records if "ack topic" in r.getMessage()]
    assert len(lines) == 6
    assert "(95 more dropped and not logged)" in lines[-1]
    assert sync.counters.acks_dropped == {"malformed": 101}
    assert states(tmp_path / "gw.db") == {ids[0]: "acked"}


# a pass: real acks for some of the batches, shuffled among arbitrary poison
poison_payloads = (
    st.binary(max_size=300)
    | (json_values | ack_shaped).map(_dumps)
    | st.builds(lambda bid: v1(bid), json_text)  # well-formed, for batches we do not have
)


@given(
    st.lists(st.tuples(poison_payloads, st.booleans()), max_size=30),
    st.sets(st.integers(0, 5)),
    st.randoms(use_true_random=False),
)
@settings(max_examples=60, deadline=None)
def test_real_acks_settle_whatever_comes_with_them(
    tmp_path_factory: pytest.TempPathFactory,
    poison: list[tuple[bytes, bool]],
    acked: set[int],
    rng: Any,
):
    db = tmp_path_factory.mktemp("fuzz") / "gw.db"
    sync, ids = sync_with_batches(db, 6)
    real = [message(v1(ids[i])) for i in sorted(acked)]
    received = real + [message(p, retain) for p, retain in poison]
    rng.shuffle(received)
    asyncio.run(sync.settle_acks(received))
    got = states(db)
    for i, bid in enumerate(ids):
        assert got[bid] == ("acked" if i in acked else "pending"), (i, got)
    assert sync.counters.acks == len(acked)
    assert sync.counters.bad_acks == len(poison)
    assert sum(sync.counters.acks_dropped.values()) == len(poison)
