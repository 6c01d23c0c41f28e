"""InfluxDB mirror: the store's readings, copied to an InfluxDB v2 write API for Grafana.

SQLite stays the source of truth (and the outbox); the mirror is a copy the factory may look
at. Readings are sent in store order, in batches, from a cursor kept in the store, which moves
only after the server accepted a batch: after an outage or a restart the mirror resumes where
it stopped, and a batch sent twice overwrites itself (same series, same timestamp). A server
that is down costs retries with backoff, never a reading in the store. Readings evicted from
the store before the mirror caught up (a mirror down for longer than retention) are skipped.

Line protocol (measurement `tanji_reading`): tags meter, point, quantity, unit, quality;
field `value` (float) for good readings, `reason` (string) for bad ones; time in ns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, TypeVar

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write.point import Point
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from pydantic import Field, SecretStr, field_validator

from gateway.drain import drain
from gateway.models import ConfigFloat, Frozen, Reading, in_range
from gateway.store.schema import RunInDb, transaction
from gateway.store.sqlite import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
MEASUREMENT = "tanji_reading"
MIRROR_CURSOR = "influxdb-mirror"


class MirrorConfig(Frozen):
    """`[mirror]` in site.toml; absent means no mirror."""

    url: str = Field(description="InfluxDB v2 base URL, e.g. http://127.0.0.1:8086")
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token: SecretStr = SecretStr("")
    batch_size: Annotated[int, in_range(1, 100_000)] = 5000
    interval_s: ConfigFloat = Field(default=5.0, ge=0.01, le=3600)
    timeout_s: ConfigFloat = Field(default=10.0, ge=0.01, le=300)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


def to_point(r: Reading, calibration: str | None = None) -> Point:
    p = (
        Point(MEASUREMENT)
        .tag("meter", r.meter_id)
        .tag("point", r.point)
        .tag("quantity", r.quantity.value)
        .tag("unit", r.unit)
        .tag("quality", r.quality.status.value)
        .time(r.ts_ns, WritePrecision.NS)
    )
    if calibration is not None:  # the meter's calibration status at the reading's time
        p = p.tag("calibration", calibration)
    if r.value is not None:
        return p.field("value", float(r.value))
    if r.text is not None:  # a label: the product code or order, as a string field
        return p.field("text", r.text)
    return p.field("reason", r.quality.reason or "bad")


class StoreCursor:
    """The store's readings after the mirror's cursor, each with its meter's calibration
    status (a gateway.drain.Cursor), read and moved on the store's own thread."""

    def __init__(
        self,
        store: Store,
        db: RunInDb | None,
        calibration_of: Callable[[Sequence[Reading]], list[str]] | None,
    ) -> None:
        self.store = store
        self._db = db
        self._calibration_of = calibration_of  # run on the store's thread with the readings

    async def _in_db(self, fn: Callable[[], T]) -> T:
        if self._db is not None:
            return await self._db(fn)
        return fn()

    async def next(self, limit: int) -> tuple[int, list[tuple[Reading, str | None]]]:
        return await self._in_db(lambda: self._next(limit))

    def _next(self, limit: int) -> tuple[int, list[tuple[Reading, str | None]]]:
        rows = self.store.readings_after(self.store.cursor(MIRROR_CURSOR) or 0, limit)
        if not rows:
            return 0, []
        readings = [r for _, r in rows]
        statuses: list[str | None] = (
            [None] * len(rows)
            if self._calibration_of is None
            else [*self._calibration_of(readings)]
        )
        return rows[-1][0], list(zip(readings, statuses, strict=True))

    async def advance(self, position: int) -> None:
        def move() -> None:
            with transaction(self.store.conn):
                self.store.set_cursor(MIRROR_CURSOR, position)

        await self._in_db(move)


class Mirror:
    """Copies readings from `store` (through `db`, the store's own thread) to InfluxDB."""

    def __init__(
        self,
        config: MirrorConfig,
        store: Store,
        db: RunInDb | None = None,
        calibration_of: Callable[[Sequence[Reading]], list[str]] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.cursor = StoreCursor(store, db, calibration_of)  # what it drains (gateway.drain)
        self._http = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tanji-mirror")
        self._client = InfluxDBClient(
            url=config.url,
            token=config.token.get_secret_value(),
            org=config.org,
            timeout=int(config.timeout_s * 1000),
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self.sent = 0
        self.failures = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        """Mirror for ever (gateway.drain): retries with backoff, never takes the gateway down."""
        await drain(
            self.cursor,
            self.send,
            self.config.batch_size,
            self.config.interval_s,
            on_error=self._failed,
        )

    def _failed(self, exc: Exception, retry_in_s: float) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("influxdb mirror: %s; retrying in %.0f s", self.last_error, retry_in_s)

    async def send(self, batch: list[tuple[Reading, str | None]]) -> None:
        """Write a batch from the cursor to InfluxDB; returns once the server accepted it."""
        points = [to_point(r, calibration) for r, calibration in batch]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._http,
            lambda: self._write.write(bucket=self.config.bucket, record=points),
        )
        self.sent += len(batch)

    def close(self) -> None:
        self._client.close()
        self._http.shutdown(wait=False)
