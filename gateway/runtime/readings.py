"""The store's raw readings as the source of cloud_sync's optional readings stream
(`cloud_sync.ReadingsSource`), read on the gateway's database thread from a cursor kept in the
store that moves only when the platform has acked a batch. Writes nothing but that cursor."""

from __future__ import annotations

from typing import Any

import cloud_sync
from gateway.models import Reading
from gateway.store.schema import RunInDb, transaction
from gateway.store.sqlite import Store

READINGS_CURSOR = "platform-readings"  # the raw readings stream's position (acked up to)


def unsent_from_id(store: Store) -> int:
    """The id after which stored readings have not reached the platform (eviction keeps
    them); call on the database thread."""
    return store.cursor(READINGS_CURSOR) or 0


class StoreReadings:
    """The store's readings for the raw readings stream (cloud_sync.ReadingsSource)."""

    def __init__(self, store: Store, db: RunInDb) -> None:
        self._store = store
        self._db = db

    async def next(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        store = self._store

        def read() -> list[tuple[int, Reading]]:
            return store.readings_after(unsent_from_id(store), limit)

        rows = await self._db(read)
        return (rows[-1][0] if rows else 0), [cloud_sync.reading_message(i, r) for i, r in rows]

    async def advance(self, seq: int) -> None:
        def move() -> None:
            with transaction(self._store.conn):
                self._store.set_cursor(READINGS_CURSOR, seq)

        await self._db(move)

    async def all_acked(self) -> bool:
        """Whether the platform has acked every reading stored so far."""
        store = self._store
        return await self._db(lambda: unsent_from_id(store) >= store.last_reading_id())
