"""Outbox send planning: a window of unacked batches, live batches first, the backlog of an
outage at a limited rate beside them, neither lane starving the other."""

from __future__ import annotations

import sqlite3

from cloud_sync import Ack, AckStatus, Outbox
from cloud_sync.sync import TokenBucket

S = 1_000_000_000


def outbox_with(old: int, new: int) -> tuple[Outbox, list[str], list[str]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    outbox = Outbox(conn)
    ids = []
    for i in range(old + new):
        created = 100 * S if i < old else 1000 * S  # the backlog was made long before
        conn.execute(
            "INSERT INTO outbox (batch_id, payload, record_count, created_ns) VALUES (?,?,?,?)",
            (f"b{i:03d}", b"{}", 1, created),
        )
        ids.append(f"b{i:03d}")
    return outbox, ids[:old], ids[old:]


def plan(outbox: Outbox, now: int, window: int, allowance: int) -> list[str]:
    return [b.batch_id for b in outbox.due(now, 30 * S, now - 30 * S, window, allowance)]


def test_live_batches_go_first_and_the_backlog_takes_its_allowance():
    outbox, backlog, live = outbox_with(old=50, new=3)
    now = 1001 * S
    first = plan(outbox, now, window=10, allowance=4)
    assert first == live + backlog[:4]  # oldest first within each lane
    outbox.mark_sent(first, now)
    # 7 in flight: three more may go, all backlog (no live left), allowance permitting
    assert plan(outbox, now, window=10, allowance=2) == backlog[4:6]
    assert plan(outbox, now, window=7, allowance=5) == []  # the window is full


def test_the_backlog_is_not_starved_by_a_flood_of_live_batches():
    outbox, backlog, live = outbox_with(old=5, new=40)
    now = 1001 * S
    sent = plan(outbox, now, window=8, allowance=3)
    assert sent == live[:7] + backlog[:1]  # one slot kept for the backlog


def test_acks_free_the_window_and_unacked_batches_are_sent_again_later():
    outbox, _backlog, live = outbox_with(old=0, new=4)
    now = 1001 * S
    assert plan(outbox, now, window=2, allowance=0) == live[:2]
    outbox.mark_sent(live[:2], now)
    outbox.apply_acks([Ack(live[0], AckStatus.ACCEPTED)], now)
    assert plan(outbox, now, window=2, allowance=0) == live[2:3]
    outbox.mark_sent(live[2:3], now)
    later = now + 31 * S  # no ack within ack_timeout: due again, now in the backlog lane
    assert plan(outbox, later, window=5, allowance=5) == [live[1], live[2], live[3]]


def test_token_bucket_paces_the_backlog():
    t = [0.0]
    bucket = TokenBucket(4.0, clock=lambda: t[0])
    assert bucket.available(100) == 4
    bucket.take(4)
    assert bucket.available(100) == 0
    t[0] += 0.5
    assert bucket.available(100) == 2
    t[0] += 100  # saved up for at most one second
    assert bucket.available(100) == 4
    assert TokenBucket(0).available(7) == 7  # 0: no limit


def test_without_a_backlog_live_batches_use_the_whole_window():
    outbox, _, live = outbox_with(old=0, new=30)
    assert plan(outbox, 1001 * S, window=20, allowance=5) == live[:20]


def test_a_clock_set_back_does_not_strand_batches_in_flight():
    outbox, _, live = outbox_with(old=0, new=5)
    now = 1001 * S
    outbox.mark_sent(live, now)
    assert plan(outbox, now + S, window=5, allowance=5) == []  # all in flight
    back = now - 3600 * S  # the clock steps back an hour: those sends lie "in the future"
    assert plan(outbox, back, window=5, allowance=5) == live
