"""The running gateway's live status: what each meter did last (`MeterStatus`), and the status
file `<store>.status.json` rewritten every STATUS_INTERVAL_S for `tanji status` (read back by
gateway/runtime/status_file.py). Never stops the gateway: a file it cannot write is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import cloud_sync
from collectors import CollectorStats
from gateway.models import Reading
from gateway.runtime.writer import Reminder
from gateway.store.diskspace import is_disk_full

log = logging.getLogger(__name__)
STATUS_INTERVAL_S = 5.0


def status_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".status.json")


@dataclass
class MeterStatus:
    """Live view of one meter for status output."""

    readings: int = 0
    bad: int = 0
    last_values: dict[str, Decimal] = field(default_factory=dict)
    last_labels: dict[str, str] = field(default_factory=dict)  # product code, order now
    last_reason: str | None = None
    last_ts_ns: int | None = None
    restarts: int = 0
    poll: CollectorStats = field(default_factory=CollectorStats)

    def note(self, readings: list[Reading]) -> None:
        """A poll cycle's readings: counted, the last value (or label) of each point kept,
        the reason of the last bad one."""
        self.readings += len(readings)
        self.last_ts_ns = readings[-1].ts_ns if readings else self.last_ts_ns
        for r in readings:
            if r.value is not None:
                self.last_values[r.point] = r.value
            elif r.text is not None:
                self.last_labels[r.point] = r.text
            else:
                self.bad += 1
                self.last_reason = r.quality.reason
                continue
            self.last_reason = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "readings": self.readings,
            "bad": self.bad,
            "last_reason": self.last_reason,
            "last_ts_ns": str(self.last_ts_ns) if self.last_ts_ns else None,
            "labels": self.last_labels,
            "restarts": self.restarts,
            "poll": self.poll.snapshot(),
        }


def outbox_snapshot(outbox: cloud_sync.OutboxStats | None, now_ns: int) -> dict[str, Any] | None:
    """The outbox's part of the status (None before its figures were first read)."""
    if outbox is None:
        return None
    return {
        "pending_batches": outbox.pending,
        "oldest_pending_age_s": None
        if outbox.oldest_pending_ns is None
        else round((now_ns - outbox.oldest_pending_ns) / 1e9, 1),
        "dead_letters": outbox.rejected,
        "held_batches": outbox.held,
        "records_acked": outbox.records_acked,
    }


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Replace the status file atomically (readers never see half a file). On a full
    disk, where even the new file finds no room, the old file is overwritten in place
    (padded with blanks: JSON allows them), so the status still names the cause."""
    tmp = path.with_suffix(".tmp")
    data = json.dumps(snapshot, indent=1).encode()
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not is_disk_full(exc, path):
            raise
        with path.open("r+b") as f:  # FileNotFoundError: no old file to reuse
            size = os.fstat(f.fileno()).st_size
            f.write(data + b" " * (size - len(data)))


async def keep_writing(
    path: Path,
    refresh: Callable[[], Awaitable[None]],
    snapshot: Callable[[], dict[str, Any]],
) -> None:
    """Every STATUS_INTERVAL_S: `refresh` the figures that are read (a failure keeps the last
    ones), then write `snapshot()` to `path`; runs until cancelled."""
    trouble = Reminder()
    while True:
        try:
            await refresh()
        except Exception:  # e.g. the database is locked: the last figures stay
            log.debug("outbox statistics not read this time", exc_info=True)
        try:
            write_status(path, snapshot())
        except OSError as exc:
            trouble.note(logging.WARNING, "cannot write %s: %s", path, exc)
        else:
            trouble.clear("status file %s written again", path)
        await asyncio.sleep(STATUS_INTERVAL_S)
