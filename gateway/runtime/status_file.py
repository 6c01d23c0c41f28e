"""The running gateway's status file read back (`tanji status`): the snapshot, its age, and
what in it needs attention. Reads the file only; never talks to the gateway.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import TanjiFailure
from gateway.runtime.status import STATUS_INTERVAL_S, status_path_for

UNACKED_ATTENTION = 3  # x ack_timeout_s: a batch sent, sent again, and still not acknowledged
STALE_AFTER = 3  # x STATUS_INTERVAL_S: a status this old is not a running gateway's


class StatusUnreadable(TanjiFailure):
    """No status file, or not one the gateway wrote."""


@dataclass(frozen=True)
class GatewayStatus:
    path: Path
    snapshot: dict[str, Any]
    age_s: float
    attention: list[str]  # meters and parts (store, aggregation, outbox, link, ...) to look at

    @property
    def stale(self) -> bool:
        """Too old to come from a running gateway."""
        return self.age_s > STALE_AFTER * STATUS_INTERVAL_S


def read_status(store_path: Path, ack_timeout_s: float, now_ns: int | None = None) -> GatewayStatus:
    """The status of the gateway of the store at `store_path`; StatusUnreadable when there is
    none or the file is not a status."""
    path = status_path_for(store_path)
    try:
        snapshot = _read_json(path)
        age_s = ((now_ns or time.time_ns()) - int(snapshot["written_ns"])) / 1e9
        return GatewayStatus(path, snapshot, age_s, attention(snapshot, ack_timeout_s))
    except FileNotFoundError:
        raise StatusUnreadable(
            f"no status at {path}: the gateway has not run with this configuration"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise not_a_status(path, exc) from None


def not_a_status(path: Path, exc: Exception) -> StatusUnreadable:
    return StatusUnreadable(f"{path}: not a tanji status file ({exc!r})")


def attention(snapshot: dict[str, Any], ack_timeout_s: float) -> list[str]:
    """What needs attention: a meter (its last reading was bad, or points were disabled), the
    store (refusing new readings), aggregation (failed passes, late readings set aside),
    calibration (records held), the outbox (dead letters), the platform (a batch waits for
    its ack longer than UNACKED_ATTENTION x ack_timeout_s), the link (down)."""
    found = [
        m
        for m, st in snapshot["meters"].items()
        if st["last_reason"] or st["poll"]["disabled_points"]
    ]
    if snapshot.get("store_over_cap") or snapshot.get("store_refusing"):
        found.append("store")
    if snapshot.get("aggregation_failures") or snapshot.get("readings_set_aside"):
        found.append("aggregation")
    if snapshot.get("records_held"):
        found.append("calibration")
    outbox = snapshot.get("outbox") or {}
    if outbox.get("dead_letters"):
        found.append("outbox")
    unacked = outbox.get("oldest_pending_age_s")
    if unacked is not None and unacked > UNACKED_ATTENTION * ack_timeout_s:
        found.append("platform")  # sent, sent again, never acknowledged
    if not (snapshot.get("link") or {}).get("connected", True):
        found.append("link")
    return found


def _read_json(path: Path) -> Any:
    """The status file's JSON. On a full disk the gateway rewrites it in place, so a read
    may catch it half written: read again then."""
    for _ in range(3):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            time.sleep(0.2)
    return json.loads(path.read_text(encoding="utf-8"))
