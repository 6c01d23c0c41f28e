"""The gateway's status snapshot as Prometheus metrics (text exposition format), for
node_exporter's textfile collector or any scraper: `tanji status --metrics`.

Built with prometheus_client's custom-collector API: the figures are the running gateway's
(read from its status file), this process only translates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GAUGES = {  # snapshot path -> (metric, help)
    ("outbox", "pending_batches"): ("tanji_outbox_pending_batches", "batches awaiting the ack"),
    ("outbox", "oldest_pending_age_s"): (
        "tanji_outbox_oldest_pending_age_seconds",
        "age of the oldest unacknowledged batch (0 when none)",
    ),
    ("outbox", "dead_letters"): ("tanji_outbox_dead_letters", "batches the platform rejected"),
    ("outbox", "held_batches"): ("tanji_outbox_held_batches", "batches held back by the site"),
    ("link", "connected"): ("tanji_platform_link_up", "1 while connected to the broker"),
    ("store_used_mb",): ("tanji_store_used_megabytes", "size of the store on disk"),
    ("store_over_cap",): ("tanji_store_over_cap", "1 when at the disk cap, nothing evictable"),
    ("readings_pending",): ("tanji_readings_pending", "readings waiting in memory for the store"),
    ("disk_free_mb",): ("tanji_disk_free_megabytes", "free space on the store's filesystem"),
}
COUNTERS = {
    ("outbox", "records_acked"): ("tanji_records_acked", "activity records the platform has"),
    ("link", "connects"): ("tanji_platform_link_connects", "connections made"),
    ("link", "disconnects"): ("tanji_platform_link_disconnects", "connections lost or refused"),
    ("link", "published"): ("tanji_batches_published", "batch publishes, re-sends included"),
    ("link", "acks"): ("tanji_acks", "application acks received"),
    ("link", "duplicates"): ("tanji_acks_duplicate", "acks saying the platform had it already"),
    ("link", "rejected"): ("tanji_acks_rejected", "acks rejecting a batch (dead letters)"),
    ("link", "readings_sent"): ("tanji_raw_readings_sent", "raw readings the platform acked"),
    ("link", "readings_rejected"): (
        "tanji_raw_readings_batches_rejected",
        "raw readings batches the platform rejected or refused",
    ),
    ("link", "batches_refused"): (
        "tanji_batch_sends_refused",
        "batch sends the platform refused as sent (HTTPS 400, 413); each is sent again",
    ),
    ("readings_stored",): ("tanji_readings_stored", "readings committed to the store"),
    ("readings_refused",): ("tanji_readings_refused", "readings dropped: the store refused"),
    ("records_created",): ("tanji_records_created", "activity records made"),
    ("records_revised",): ("tanji_records_revised", "revisions made after late readings"),
    ("aggregation_failures",): ("tanji_aggregation_failures", "aggregation passes that failed"),
}


def _get(snapshot: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = snapshot
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None:
        return 0.0
    return float(value) if isinstance(value, int | float) else None


class _Snapshot(Collector):
    def __init__(self, snapshot: dict[str, Any], age_s: float) -> None:
        self.snapshot = snapshot
        self.age_s = age_s

    def collect(self) -> Iterator[Metric]:
        age = GaugeMetricFamily("tanji_status_age_seconds", "how old the status file is")
        age.add_metric([], self.age_s)
        yield age
        refusing = GaugeMetricFamily(
            "tanji_store_refusing", "1 while the store refuses new readings (disk full, cap)"
        )
        refusing.add_metric([], 1.0 if self.snapshot.get("store_refusing") else 0.0)
        yield refusing
        for families, kind in ((GAUGES, GaugeMetricFamily), (COUNTERS, CounterMetricFamily)):
            for path, (name, text) in families.items():
                value = _get(self.snapshot, path)
                if value is not None:
                    family = kind(name, text)
                    family.add_metric([], value)
                    yield family
        readings = CounterMetricFamily(
            "tanji_meter_readings", "readings per meter", labels=["meter"]
        )
        bad = CounterMetricFamily("tanji_meter_bad_readings", "bad readings", labels=["meter"])
        for meter, st in sorted(self.snapshot.get("meters", {}).items()):
            readings.add_metric([meter], float(st.get("readings", 0)))
            bad.add_metric([meter], float(st.get("bad", 0)))
        yield readings
        yield bad


def prometheus_text(snapshot: dict[str, Any], age_s: float) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snapshot, age_s))
    return generate_latest(registry).decode()
