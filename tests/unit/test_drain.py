"""gateway.drain: the cursor moves only past what the remote took; a failed send is sent again;
with `on_error` the drain rides out failures (told how long until the next try), without it
they propagate."""

from __future__ import annotations

import asyncio

import pytest

from gateway.drain import drain, drain_once


class ListCursor:
    """Items 1..n at positions 1..n; `position` moves only by advance()."""

    def __init__(self, n: int) -> None:
        self.items = list(range(1, n + 1))
        self.position = 0

    async def next(self, limit: int) -> tuple[int, list[int]]:
        batch = [i for i in self.items if i > self.position][:limit]
        return (batch[-1] if batch else 0), batch

    async def advance(self, position: int) -> None:
        assert position > self.position
        self.position = position


class FlakyRemote:
    def __init__(self, fail_on: set[int]) -> None:
        self.fail_on = fail_on  # the calls (1-based) that fail
        self.calls = 0
        self.got: list[int] = []

    async def send(self, batch: list[int]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise ConnectionError(f"call {self.calls} refused")
        self.got += batch


async def test_once_moves_the_cursor_only_past_what_the_remote_took():
    cursor, remote = ListCursor(5), FlakyRemote(fail_on={2})
    assert await drain_once(cursor, remote.send, 2) == 2
    with pytest.raises(ConnectionError):
        await drain_once(cursor, remote.send, 2)
    assert cursor.position == 2  # the failed batch is read again
    assert [await drain_once(cursor, remote.send, 2) for _ in range(3)] == [2, 1, 0]
    assert remote.got == [1, 2, 3, 4, 5]


async def test_drain_rides_out_failures_with_on_error_and_sends_everything_once():
    cursor, remote = ListCursor(7), FlakyRemote(fail_on={1, 2, 4})
    errors: list[str] = []
    delays: list[float] = []

    def on_error(exc: Exception, retry_in_s: float) -> None:
        errors.append(str(exc))
        delays.append(retry_in_s)

    task = asyncio.create_task(drain(cursor, remote.send, 3, idle_s=0.01, on_error=on_error))
    while cursor.position < 7:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert remote.got == [1, 2, 3, 4, 5, 6, 7]
    assert errors == ["call 1 refused", "call 2 refused", "call 4 refused"]
    # idle_s, doubled while tries fail, back to idle_s after one that worked (jitter ±20 %)
    for delay, nominal in zip(delays, [0.01, 0.02, 0.01], strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2


async def test_drain_without_on_error_propagates_the_failure():
    cursor, remote = ListCursor(3), FlakyRemote(fail_on={2})
    with pytest.raises(ConnectionError, match="call 2"):
        await drain(cursor, remote.send, 1, idle_s=0.01)
    assert cursor.position == 1
