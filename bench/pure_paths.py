"""Throughput of the pure core: register decoding and aggregation. Prints JSON.

Run from the repository root: .venv/bin/python -m bench.pure_paths
"""

from __future__ import annotations

import json
import platform
import time
from decimal import Decimal

from collectors.modbus.decode import decode, encode
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
    results = {
        "python": platform.python_version(),
        "decode_uint32_per_s": round(
            rate(lambda: decode(words, "uint32", "CDAB", Decimal("0.01")), 200_000)
        ),
        "decode_float32_per_s": round(
            rate(lambda: decode(fwords, "float32", "ABCD", Decimal(1)), 200_000)
        ),
        "aggregate_15min_of_5s_readings_per_s": round(rate(lambda: run(day, 0, 900), 300)),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
