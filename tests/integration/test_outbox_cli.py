"""`tanji outbox list|retry|release|discard` on a real store: dead letters and held batches are
listed (exit 1), sent again or given up with a reason, never lost."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import cloud_sync
from cloud_sync import Ack, AckStatus
from gateway.cli import app
from gateway.store.schema import transaction
from gateway.store.sqlite import Store
from tests.unit.test_aggregation import reading, run

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"
USCC = "91350100M000100Y43"


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def setup(tmp_path: Path) -> tuple[str, list[str]]:
    """A site whose store holds a rejected batch, a held one and a pending one."""
    (tmp_path / "site.toml").write_text(EXAMPLE.read_text())
    store = Store(tmp_path / "tanji.db")
    cloud_sync.create_schema(store.conn)
    rs = [reading(t, f"{t}.00") for t in range(6)]
    ids = []
    with transaction(store.conn):
        for i, held in ((0, False), (1, True), (2, False)):
            ids += cloud_sync.enqueue(store.conn, USCC, "gw", [run(rs, i, i + 1)], 10, i, held=held)
    cloud_sync.Outbox(store.conn).apply_acks([Ack(ids[0], AckStatus.REJECTED, "unknown meter")], 5)
    store.close()
    return str(tmp_path / "site.toml"), ids


def test_list_retry_release_and_discard(tmp_path: Path):
    config, (rejected, held, pending) = setup(tmp_path)
    listed = cli("outbox", "list", "-c", config, "--json")
    assert listed.exit_code == 1
    assert [(p["batch_id"], p["state"], p["reason"]) for p in json.loads(listed.stdout)] == [
        (rejected, "rejected", "unknown meter"),
        (held, "held", None),
    ]
    assert cli("outbox", "retry", "-c", config, held).exit_code == 2  # held is not a dead letter
    assert cli("outbox", "retry", "-c", config, "--all").exit_code == 0
    assert cli("outbox", "release", "-c", config, "--all").exit_code == 0
    assert cli("outbox", "list", "-c", config).exit_code == 0  # nothing parked now
    store = Store(tmp_path / "tanji.db")
    outbox = cloud_sync.Outbox(store.conn)
    due = [b.batch_id for b in outbox.due(10, 0, 0, 100, 100)]
    assert due == [rejected, held, pending]  # on their way again, oldest first
    outbox.apply_acks([Ack(held, AckStatus.REJECTED, "still wrong")], 11)
    store.close()
    no_reason = cli("outbox", "discard", "-c", config, held, "--reason", " ")
    assert no_reason.exit_code == 2
    gone = cli("outbox", "discard", "-c", config, held, "--reason", "sent by hand")
    assert gone.exit_code == 0, gone.output
    assert cli("outbox", "list", "-c", config).exit_code == 0
    store = Store(tmp_path / "tanji.db")
    row = store.conn.execute("SELECT state, reason FROM outbox WHERE batch_id=?", (held,))
    assert row.fetchone() == ("discarded", "sent by hand")  # kept, with why
    store.close()
    unknown = cli("outbox", "retry", "-c", config, "nope")
    assert unknown.exit_code == 2
    assert "no batch 'nope'" in unknown.output
    assert cli("outbox", "retry", "-c", config).exit_code == 2  # neither an id nor --all
