"""Throughput of the pure core: register decoding, an OPC UA sample made a reading and a store
row, a reading's Merkle leaf, and aggregation. Prints JSON.

Run from the repository root: .venv/bin/python -m bench.pure_paths
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from decimal import Decimal

from asyncua import ua

from collectors.modbus.decode import decode, encode
from collectors.opcua.collector import reading_of
from collectors.opcua.config import OpcUaPoint
from gateway.evidence import leaf_hash
from gateway.store.sqlite import _row
from tests.unit.test_aggregation import reading, run


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    words = encode(1234567, "uint32", "CDAB")
    fwords = encode(123.456, "float32", "ABCD")
    day = [reading(i * 5.0, str(Decimal(i) / 100)) for i in range(-1, 180)]  # 15 min at 5 s
    energy = OpcUaPoint.model_validate(
        {"quantity": "active_energy_import", "kind": "counter", "unit": "kWh", "node": "nsu=u;s=e"}
    )
    now = datetime.now(UTC)
    sample = ua.DataValue(
        Value=ua.Variant(123456.789, ua.VariantType.Double),
        SourceTimestamp=now,
        ServerTimestamp=now,
    )
    series = {("P1", energy.name): 1}
    results = {
        "python": platform.python_version(),
        "decode_uint32_per_s": round(
            rate(lambda: decode(words, "uint32", "CDAB", Decimal("0.01")), 200_000)
        ),
        "decode_float32_per_s": round(
            rate(lambda: decode(fwords, "float32", "ABCD", Decimal(1)), 200_000)
        ),
        "opcua_sample_to_store_row_per_s": round(
            rate(lambda: _row(reading_of("P1", energy, sample, 1), series), 200_000)
        ),
        "reading_leaf_hash_per_s": round(rate(lambda: leaf_hash(day[1], True), 200_000)),
        "aggregate_15min_of_5s_readings_per_s": round(rate(lambda: run(day, 0, 900), 300)),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
