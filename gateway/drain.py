"""Drain from a durable cursor to a remote: read what lies after the cursor, send it, and move
the cursor only when the remote has it.

Used by the InfluxDB mirror (gateway/store/mirror.py) and by cloud_sync's raw readings stream
(the platform has a batch when it acked it). A crash or a failed send leaves the cursor where
it was, so that batch is read and sent again: the remote must take a batch twice (the mirror
overwrites the same points; the platform recognises the batch id). Here, in the gateway's
ground layer, so the store and cloud_sync may both use it without knowing each other.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol[T]):
    """Items in a durable order, read from a cursor that moves only by `advance`."""

    async def next(self, limit: int) -> tuple[int, list[T]]:
        """(position of the last item, up to `limit` items after the cursor)."""
        ...

    async def advance(self, position: int) -> None:
        """The remote has every item up to `position`."""
        ...


Send = Callable[[list[T]], Awaitable[None]]
"""Hands a batch to the remote; returns when the remote has it, raises when it has not."""


async def drain_once(cursor: Cursor[T], send: Send[T], limit: int) -> int:
    """Send the next batch after the cursor and move the cursor past it; how many went."""
    last, items = await cursor.next(limit)
    if not items:
        return 0
    await send(items)
    await cursor.advance(last)
    return len(items)


async def drain(
    cursor: Cursor[T],
    send: Send[T],
    limit: int,
    idle_s: float,
    on_error: Callable[[Exception, float], None] | None = None,
    max_backoff_s: float = 300.0,
) -> NoReturn:
    """Drain for ever: full batches back to back (catching up), and `idle_s` of rest after a
    batch that was not full (caught up). A failure propagates, unless `on_error` is given:
    then it is told the error and the seconds until the next try, which waits `idle_s`,
    doubling up to `max_backoff_s` (with jitter) while tries fail, back to none after one
    that worked."""
    backoff = 0.0
    while True:
        try:
            sent = await drain_once(cursor, send, limit)
        except Exception as exc:
            if on_error is None:
                raise
            backoff = min(max_backoff_s, max(idle_s, backoff * 2))
            delay = backoff * random.uniform(0.8, 1.2)
            on_error(exc, delay)
            await asyncio.sleep(delay)
            continue
        backoff = 0.0
        if sent < limit:
            await asyncio.sleep(idle_s)
