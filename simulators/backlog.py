"""Synthetic activity records for load and fault tests: what a site of N meters produces over
a span of hours (the outbox after an outage), computed by the real aggregator from simulated
counter readings at every period boundary, so every record is a valid contract record."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from cloud_sync import create_schema, enqueue
from collectors.modbus import ModbusPoint
from gateway.activity import PeriodInput, aggregate
from gateway.models import (
    ActivityRecord,
    CalibrationRecord,
    Carrier,
    Meter,
    PointKind,
    Quality,
    Quantity,
    Reading,
)
from gateway.periods import NS, Interval

TZ = ZoneInfo("Asia/Shanghai")
POINT = ModbusPoint(
    name="active_energy_import",
    quantity=Quantity.ACTIVE_ENERGY_IMPORT,
    kind=PointKind.COUNTER,
    unit="kWh",
    address=0,
    data_type="uint32",
    scale=Decimal("0.01"),
)
CERTIFICATE = CalibrationRecord(
    certificate_no="SIM-CERT", lab="simulated lab", calibration_date=date(2026, 1, 1),
    due_date=date(2027, 12, 31),
)  # fmt: skip


def meter(i: int) -> Meter:
    return Meter(
        id=f"M{i + 1:04d}",
        serial=f"SIM-{i + 1:05d}",
        model="simulated meter (not a real product)",
        carrier=Carrier.ELECTRICITY,
        accuracy_class="1",
        line=f"line-{i % 10 + 1}",
        calibrations=(CERTIFICATE,),
    )


def reading(m: Meter, ts_ns: int, kwh: Decimal) -> Reading:
    return Reading(
        meter_id=m.id,
        point=POINT.name,
        quantity=POINT.quantity,
        kind=POINT.kind,
        unit=POINT.unit,
        ts_ns=ts_ns,
        raw=int(kwh * 100).to_bytes(4, "big"),
        value=kwh,
        quality=Quality.good(),
    )


def site_records(
    uscc: str,
    gateway_id: str,
    meters: int,
    start_ns: int,  # aligned to the interval in Asia/Shanghai
    periods: int,
    interval: str = "15min",
) -> Iterator[ActivityRecord]:
    """Records period by period (all meters of a period, then the next), as a gateway makes
    them; meter i draws (i % 7 + 1) × 10 kW."""
    step = Interval.parse(interval)
    if step.seconds is None:
        raise ValueError("a fixed-length interval, not month")
    length = step.seconds * NS
    fleet = [meter(i) for i in range(meters)]
    for k in range(periods):
        s, e = start_ns + k * length, start_ns + (k + 1) * length
        for i, m in enumerate(fleet):
            kw = Decimal((i % 7 + 1) * 10)
            at = [Decimal(t - start_ns) / (3600 * NS) * kw for t in (s, e)]
            yield aggregate(
                PeriodInput(
                    uscc=uscc,
                    gateway_id=gateway_id,
                    meter=m,
                    point=POINT,
                    interval=step,
                    start_ns=s,
                    end_ns=e,
                    before=[],
                    readings=[reading(m, s, at[0].quantize(Decimal("0.01")))],
                    after=[reading(m, e, at[1].quantize(Decimal("0.01")))],
                    gap_limit_ns=length + 1,
                    tz=TZ,
                )
            )


def fill_outbox(
    path: Path,
    uscc: str,
    gateway_id: str,
    records: Iterable[ActivityRecord],
    batch_size: int = 50,
    compress: bool = True,
    created_ns: int | None = None,
) -> list[str]:
    """An outbox database (as a gateway's store holds it) with `records` pending; returns
    the batch ids, oldest first."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        create_schema(conn)
        conn.execute("BEGIN")
        ids = enqueue(
            conn,
            uscc,
            gateway_id,
            list(records),
            batch_size,
            time.time_ns() if created_ns is None else created_ns,
            compress=compress,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return ids
