"""A store writer for the kill -9 test: appends batches of readings forever and prints
`committed N` after the N-th batch's transaction returned (the reading is then durable)."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

from gateway.models import PointKind, Quality, Quantity, Reading
from gateway.store.sqlite import Store

BATCH = 1000


def main(path: str) -> None:
    store = Store(Path(path))
    good = Quality.good()
    n = store.conn.execute("SELECT count(*) FROM readings").fetchone()[0] // BATCH  # go on
    while True:
        ts = 1_764_000_000_000_000_000 + n * 1_000_000_000
        store.append_readings(
            [
                Reading.trusted(
                    f"M{i % 50}",
                    f"p{i // 50}",
                    Quantity.ACTIVE_POWER,
                    PointKind.GAUGE,
                    "kW",
                    ts,
                    i.to_bytes(4, "big"),
                    Decimal(n),
                    good,
                )
                for i in range(BATCH)
            ]
        )
        n += 1
        print(f"committed {n}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
