"""Platform contract v1: content-derived batch ids, schema validation, duplicates, rejections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud_sync import Ack, AckStatus, ContractError, build_batch, parse_batch
from simulators.platform import PlatformStore
from tests.unit.test_aggregation import reading, run

USCC = "91350100M000100Y43"


def records():
    rs = [reading(-0.5, "1.00"), reading(1, "1.50"), reading(3, "2.25")]
    return [run(rs, 0, 2), run(rs, 2, 4)]


def test_batch_id_depends_on_content_only():
    a = build_batch(USCC, "gw", records())
    b = build_batch(USCC, "gw", records())
    assert a["batch_id"] == b["batch_id"]
    assert build_batch(USCC, "gw", records()[:1])["batch_id"] != a["batch_id"]


def test_platform_accepts_then_recognises_duplicate(tmp_path: Path):
    store = PlatformStore(tmp_path / "p.db")
    payload = json.dumps(build_batch(USCC, "gw", records())).encode()
    topic = f"tanji/v1/{USCC}/gw/activity"
    assert store.receive(topic, payload).status is AckStatus.ACCEPTED
    assert store.receive(topic, payload).status is AckStatus.DUPLICATE
    assert store.counts() == (1, 2)


def test_tampered_record_is_rejected_with_reason(tmp_path: Path):
    store = PlatformStore(tmp_path / "p.db")
    batch = build_batch(USCC, "gw", records())
    batch["records"][0]["quantity"] = "999.99"
    ack = store.receive(f"tanji/v1/{USCC}/gw/activity", json.dumps(batch).encode())
    assert ack.status is AckStatus.REJECTED
    assert "batch_id does not match the content" in ack.reason
    assert store.counts() == (0, 0)


def test_schema_violation_names_the_field(tmp_path: Path):
    batch = build_batch(USCC, "gw", records())
    batch["records"][1]["coverage"] = 2
    with pytest.raises(ContractError, match=r"records/1/coverage"):
        parse_batch(json.dumps(batch).encode())


def test_garbage_is_rejected_not_crashing(tmp_path: Path):
    store = PlatformStore(tmp_path / "p.db")
    assert store.receive("tanji/v1/x/y/activity", b"\xff\x00not json") is None
    ack = store.receive("tanji/v1/x/y/activity", b'{"batch_id": "abc"}')
    assert ack.status is AckStatus.REJECTED


def test_ack_round_trip_and_malformed_acks():
    ack = Ack("a" * 64, AckStatus.REJECTED, "bad")
    assert Ack.from_json(ack.to_json()) == ack
    with pytest.raises(ContractError):
        Ack.from_json(b'{"schema": "tanji.ack/1", "batch_id": "x", "status": "maybe"}')
    with pytest.raises(ContractError):
        Ack.from_json(b'{"schema": "tanji.ack/1", "batch_id": "x", "status": "rejected"}')


def test_platform_keeps_revisions_and_counts_the_latest(tmp_path: Path):
    from gateway.activity.aggregation import revise

    store = PlatformStore(tmp_path / "p.db")
    topic = f"tanji/v1/{USCC}/gw/activity"
    original = records()
    assert store.receive(topic, json.dumps(build_batch(USCC, "gw", original)).encode()).status is (
        AckStatus.ACCEPTED
    )
    # a backfilled reading at 1.5 s changes both periods
    late = [reading(-0.5, "1.00"), reading(1, "1.50"), reading(1.5, "2.00"), reading(3, "2.25")]
    revised = [
        revise(run(late, a, b), old) for (a, b), old in zip([(0, 2), (2, 4)], original, strict=True)
    ]
    assert all(r is not None and r.revision == 1 for r in revised)
    forked = revised[0].model_copy(update={"supersedes": "0" * 32})
    ack = store.receive(topic, json.dumps(build_batch(USCC, "gw", [forked])).encode())
    assert ack.status is AckStatus.REJECTED
    assert "conflicts with the revisions held for its period" in ack.reason
    ack = store.receive(topic, json.dumps(build_batch(USCC, "gw", revised)).encode())
    assert ack.status is AckStatus.ACCEPTED
    assert len(store.records(revisions=True)) == 4
    assert [r["revision"] for r in store.records()] == [1, 1]
    assert store.totals()[("M1", "active_energy_import")] == sum(r.quantity for r in revised)


def test_revisions_may_arrive_out_of_order(tmp_path: Path):
    """A re-send after an outage can bring revision 1 before revision 0: both are kept and
    the latest counts, whichever came first."""
    from gateway.activity.aggregation import revise

    store = PlatformStore(tmp_path / "p.db")
    topic = f"tanji/v1/{USCC}/gw/activity"
    (original,) = records()[:1]
    late = [reading(-0.5, "1.00"), reading(1, "1.50"), reading(1.5, "2.00"), reading(3, "2.25")]
    newer = revise(run(late, 0, 2), original)
    assert newer is not None
    for batch in ([newer], [original]):
        ack = store.receive(topic, json.dumps(build_batch(USCC, "gw", batch)).encode())
        assert ack.status is AckStatus.ACCEPTED, ack.reason
    assert [r["revision"] for r in store.records()] == [1]
    assert len(store.records(revisions=True)) == 2


def test_released_schemas_never_change_and_every_schema_is_versioned():
    """A change to a released schema must be a new version file (cloud_sync/schemas/
    released.toml): this fails when a released file's bytes change or a file is unlisted."""
    import hashlib
    import re
    import tomllib

    schemas = Path(__file__).parents[2] / "cloud_sync" / "schemas"
    released = tomllib.loads((schemas / "released.toml").read_text())["released"]
    listed = {r["file"]: r["sha256"] for r in released}
    for path in sorted(schemas.glob("*.json")):
        assert path.name in listed, f"{path.name} is not in released.toml"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == listed[path.name], (
            f"{path.name} changed after its release: add a new version file instead"
        )
        name, version = re.fullmatch(r"(.+)\.v(\d+)\.json", path.name).groups()  # type: ignore[union-attr]
        const = json.loads(path.read_text())["properties"]["schema"]["const"]
        assert const == f"tanji.{name}/{version}"


def test_gzip_payloads_are_read_and_broken_ones_named(tmp_path: Path):
    import gzip

    store = PlatformStore(tmp_path / "p.db")
    topic = f"tanji/v1/{USCC}/gw/activity"
    payload = json.dumps(build_batch(USCC, "gw", records())).encode()
    assert store.receive(topic, gzip.compress(payload)).status is AckStatus.ACCEPTED
    assert store.receive(topic, payload).status is AckStatus.DUPLICATE  # same content
    assert store.receive(topic, gzip.compress(payload)[:30]) is None  # no batch id to ack
    (reason,) = store.db.execute("SELECT reason FROM rejections").fetchone()
    assert "gzip payload cannot be decompressed" in reason


def test_readings_batches_are_checked_stored_once_and_conflicts_refused(tmp_path: Path):
    from cloud_sync import build_readings_batch, parse_readings_batch, reading_message

    store = PlatformStore(tmp_path / "p.db")
    topic = f"tanji/v1/{USCC}/gw/readings"
    rs = [reading(0, "1.00"), reading(1, None, "timeout"), reading(2, "1.25")]
    messages = [reading_message(i + 1, r) for i, r in enumerate(rs)]
    batch = build_readings_batch(USCC, "gw", messages)
    payload = json.dumps(batch).encode()
    assert parse_readings_batch(payload)["batch_id"] == batch["batch_id"]
    assert store.receive(topic, payload).status is AckStatus.ACCEPTED
    assert store.receive(topic, payload).status is AckStatus.DUPLICATE
    assert [(r["seq"], r["value"], r["quality"]) for r in store.readings()] == [
        (1, "1.00", "good"),
        (2, None, "bad"),
        (3, "1.25", "good"),
    ]
    # an overlapping batch that agrees adds only what is new
    more = build_readings_batch(USCC, "gw", [*messages[2:], reading_message(4, reading(3, "1.5"))])
    assert store.receive(topic, json.dumps(more).encode()).status is AckStatus.ACCEPTED
    assert len(store.readings()) == 4
    # one that disagrees with a held reading is refused with the number
    changed = build_readings_batch(USCC, "gw", [reading_message(3, reading(2, "9.99"))])
    ack = store.receive(topic, json.dumps(changed).encode())
    assert ack.status is AckStatus.REJECTED
    assert "reading 3 held with other content" in (ack.reason or "")
    # the readings topic takes readings batches only
    wrong = store.receive(topic, json.dumps(build_batch(USCC, "gw", records())).encode())
    assert wrong.status is AckStatus.REJECTED


def test_readings_batch_2_carries_labels_and_server_times_and_batch_1_is_still_taken(
    tmp_path: Path,
):
    from cloud_sync import build_readings_batch, reading_message
    from cloud_sync.contract import batch_id
    from tests.unit.test_store import LABEL

    store = PlatformStore(tmp_path / "p.db")
    topic = f"tanji/v1/{USCC}/gw/readings"
    code = LABEL.model_copy(update={"ts_ns": 10, "server_ts_ns": 9, "text": "CELL-B"})
    batch = build_readings_batch(USCC, "gw", [reading_message(1, code)])
    assert batch["schema"] == "tanji.readings-batch/2"
    assert store.receive(topic, json.dumps(batch).encode()).status is AckStatus.ACCEPTED
    (held,) = store.readings()
    assert (held["kind"], held["text"], held["value"], held["server_ts_ns"]) == (
        "label", "CELL-B", None, 9
    )  # fmt: skip
    # the same number with another text contradicts it
    other = reading_message(1, code.model_copy(update={"text": "CELL-C"}))
    ack = store.receive(topic, json.dumps(build_readings_batch(USCC, "gw", [other])).encode())
    assert "reading 1 held with other content" in (ack.reason or "")
    # the schema keeps text and value apart: a good label without text, a label with a value
    for wrong in (
        {"text": None},
        {"value": "1"},
        {"unit": "kWh"},
        {"text": "CELL\u0000"},
        {"kind": "gauge", "unit": "1", "text": None, "value": "3"},  # a product code is a label
        {"quantity": "active_energy_import"},  # and an energy reading is not
    ):
        message = {**reading_message(2, code), **wrong}
        body = {"uscc": USCC, "gateway_id": "gw", "readings": [message]}
        bad = {**body, "schema": "tanji.readings-batch/2", "batch_id": _id(batch_id, body)}
        ack = store.receive(topic, json.dumps(bad).encode())
        assert ack.status is AckStatus.REJECTED, wrong
    # a gateway not yet upgraded sends version 1: taken, its readings without the new fields
    v1 = dict(reading_message(2, reading(0, "1.00")))
    for added in ("kind", "server_ts_ns", "text"):
        del v1[added]
    body = {"uscc": USCC, "gateway_id": "gw", "readings": [v1]}
    old = {**body, "schema": "tanji.readings-batch/1", "batch_id": _id(batch_id, body)}
    assert store.receive(topic, json.dumps(old).encode()).status is AckStatus.ACCEPTED
    assert store.readings()[1]["kind"] == "counter"
    unknown = store.receive(topic, json.dumps({**old, "schema": "tanji.readings-batch/9"}).encode())
    assert "not a readings batch this takes" in (unknown.reason or "")


def _id(batch_id: Any, body: dict[str, Any]) -> str:
    return str(batch_id(body["uscc"], body["gateway_id"], body["readings"], "readings"))


def test_a_record_or_reading_twice_in_one_batch_is_stored_once(tmp_path: Path):
    from cloud_sync import build_readings_batch, reading_message

    store = PlatformStore(tmp_path / "p.db")
    r0 = records()[0]
    twice = json.dumps(build_batch(USCC, "gw", [r0, r0])).encode()
    assert store.receive(f"tanji/v1/{USCC}/gw/activity", twice).status is AckStatus.ACCEPTED
    assert store.counts() == (1, 1)
    m = reading_message(1, reading(0, "1.00"))
    again = json.dumps(build_readings_batch(USCC, "gw", [m, m])).encode()
    assert store.receive(f"tanji/v1/{USCC}/gw/readings", again).status is AckStatus.ACCEPTED
    assert len(store.readings()) == 1


def test_messages_the_checker_cannot_take_are_contract_errors():
    for payload in (b"[" * 100_000, b'{"schema": "\\udc00", "batch_id": "x"}'):
        with pytest.raises(ContractError):
            parse_batch(payload)
        with pytest.raises(ContractError):
            Ack.from_json(payload)
