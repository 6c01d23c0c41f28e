"""The InfluxDB mirror writes the store's readings to a real server speaking the InfluxDB v2
write API (Debian's victoria-metrics) and reads them back; it resumes from its cursor and a
dead server costs nothing in the store."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.drain import drain_once
from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.store.mirror import MIRROR_CURSOR, Mirror, MirrorConfig
from gateway.store.sqlite import Store
from tests.conftest import VictoriaMetrics

T0 = 1_764_000_000_000_000_000


def reading(i: int, good: bool = True) -> Reading:
    return Reading.trusted(
        "M1",
        "active_power",
        Quantity.ACTIVE_POWER,
        PointKind.GAUGE,
        "kW",
        T0 + i * 1_000_000_000,
        b"\x00\x01",
        Decimal(i) + Decimal("0.25") if good else None,
        Quality.good() if good else Quality.bad("timeout"),
    )


def exported(server: VictoriaMetrics) -> list[dict]:
    urllib.request.urlopen(f"{server.url}/internal/force_flush", timeout=10).read()
    url = f"{server.url}/api/v1/export?match[]=%7B__name__%3D~%22tanji_.*%22%7D"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def config(server: VictoriaMetrics, batch: int = 4) -> MirrorConfig:
    return MirrorConfig(url=server.url, org="factory", bucket="site", batch_size=batch)


async def test_mirror_writes_and_reads_back(tmp_path: Path, victoria_metrics: VictoriaMetrics):
    store = Store(tmp_path / "g.db")
    store.append_readings([reading(i) for i in range(10)] + [reading(10, good=False)])
    # as in the gateway: every store call on the one database thread
    db_thread = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    mirror = Mirror(
        config(victoria_metrics),
        store,
        lambda fn: loop.run_in_executor(db_thread, fn),
        lambda readings: ["valid" if r.value is not None else "expired" for r in readings],
    )
    sent = [await drain_once(mirror.cursor, mirror.send, 4) for _ in range(4)]
    assert sent == [4, 4, 3, 0]  # batches of 4, then nothing left
    mirror.close()
    db_thread.shutdown()
    series = exported(victoria_metrics)
    values = next(s for s in series if s["metric"]["__name__"] == "tanji_reading_value")
    assert values["metric"]["meter"] == "M1"
    assert values["metric"]["point"] == "active_power"
    assert values["metric"]["quality"] == "good"
    assert values["metric"]["calibration"] == "valid"  # each reading's calibration status
    assert values["values"] == [i + 0.25 for i in range(10)]
    # stored at millisecond resolution by victoria-metrics
    assert values["timestamps"] == [(T0 + i * 1_000_000_000) // 1_000_000 for i in range(10)]


async def test_mirror_resumes_from_its_cursor_and_survives_a_dead_server(
    tmp_path: Path, victoria_metrics: VictoriaMetrics
):
    store = Store(tmp_path / "g.db")
    store.append_readings([reading(i) for i in range(5)])
    first = Mirror(config(victoria_metrics, batch=100), store)
    assert await drain_once(first.cursor, first.send, 100) == 5
    first.close()
    store.append_readings([reading(i) for i in range(5, 8)])
    victoria_metrics.stop()
    second = Mirror(config(victoria_metrics, batch=100), store)  # a restarted gateway
    with pytest.raises(Exception, match="Connection refused"):  # urllib3 NewConnectionError
        await drain_once(second.cursor, second.send, 100)
    assert store.cursor(MIRROR_CURSOR) == 5  # nothing lost, nothing skipped
    victoria_metrics.start()
    assert await drain_once(second.cursor, second.send, 100) == 3
    second.close()
    values = next(
        s for s in exported(victoria_metrics) if s["metric"]["__name__"] == "tanji_reading_value"
    )
    assert values["values"] == [i + 0.25 for i in range(8)]


def test_mirror_config_errors_name_the_field():
    from gateway.config import ConfigError, parse_site_config

    example = Path(__file__).parents[2] / "deploy" / "site.example.toml"
    import tomllib

    data = tomllib.loads(example.read_text())
    data["mirror"] = {"url": "influx:8086", "org": "f", "bucket": ""}
    with pytest.raises(ConfigError) as info:
        parse_site_config(data)
    assert sorted(str(p) for p in info.value.problems) == [
        "mirror.bucket: String should have at least 1 character",
        "mirror.url: must start with http:// or https://",
    ]
