"""Fault campaign: the whole chain as real processes, the gateway SIGKILLed hundreds of times,
then what the platform holds compared with what the gateway made and what the meters counted.

    .venv/bin/python -m bench.faults                       # 200 gateway kills over ~15 min
    .venv/bin/python -m bench.faults --seed 2 --kills 300 --duration 1200

A Mosquitto broker, `tanji sim modbus` (meters with a seeded scenario of faults: silent, slow,
exceptions, busy, frozen and rolled-over counters, a replaced meter, read glitches to 0 and to
the register's maximum, noise), `tanji sim platform` (SQLite) and `tanji run` on a generated
site.toml. The kill loop starts the gateway, SIGKILLs it after a random (seeded) time, and
again; every `--platform-every`th life the platform is SIGKILLed too, every `--broker-every`th
the broker is restarted (SIGTERM and SIGKILL in turn). Then a clean drain: the meters stop,
the gateway seals its last periods, the platform acks everything, Ctrl-C. Compared afterwards:

- records: every record (and revision) the gateway made is at the platform exactly once;
- energy per meter: the platform's sum of the latest revisions against the simulator's own
  counters over exactly the same spans (the meters' journal, `FleetJournal`): each run of
  consecutive measured periods within one register step, half a step more for each of its
  ends the gateway interpolated. Periods the gateway flags as not measured (a counter that
  went backwards or jumped beyond what the meter can do) are compared apart: they may book
  less than the meter counted, never more.

Prints JSON. tests/fault/test_fault_campaign.py runs a short campaign with this code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import tomli_w

from gateway.activity.aggregation import EXACT
from gateway.cli.demo_site import demo_site, free_port_range, write_site
from gateway.config import SiteConfig
from gateway.models import ActivityFlag, BoundaryValue, PointSpec, Quantity
from gateway.periods import NS, datetime_to_ns
from gateway.runtime.status import status_path_for
from gateway.store.sqlite import Store
from simulators.modbus_fleet import FleetJournal, rated_kw
from simulators.platform import PlatformStore, ack_signer, public_key_path
from tests.conftest import Mosquitto, _mosquitto_binary
from tests.support.procs import Proc, wait_until

ENERGY = Quantity.ACTIVE_ENERGY_IMPORT.value
# the gateway's own word that a period's energy was not measured: a step it refused
NOT_MEASURED = frozenset(
    {ActivityFlag.COUNTER_BACKWARDS, ActivityFlag.IMPLAUSIBLE_STEP, ActivityFlag.METER_REPLACED}
)
# scenario faults: (kind, parameters, weight); the counter faults move the energy register
FAULTS: tuple[tuple[str, dict[str, float], int], ...] = (
    ("silent", {"duration_s": 4}, 3),
    ("exception", {"code": 4, "duration_s": 3}, 2),
    ("busy", {"duration_s": 3}, 2),
    ("slow", {"delay_s": 0.4, "duration_s": 6}, 2),
    ("noise", {"level": 0.05, "duration_s": 10}, 1),
    ("frozen", {"duration_s": 8}, 3),
    ("rollover", {"in_s": 4}, 2),
    ("replaced", {}, 1),
    ("glitch", {"reads": 1}, 2),  # a read of the energy counter shows 0
    ("glitch", {"reads": 2, "top": True}, 2),  # two show the register's maximum
)
COUNTER_FAULTS = frozenset({"frozen", "rollover", "replaced", "glitch"})


@dataclass
class Options:
    seed: int = 1
    kills: int = 200  # gateway SIGKILLs
    duration_s: float = 900.0  # the kill loop's planned length: a life is duration/kills on average
    meters: int = 3
    platform_every: int = 15  # SIGKILL the platform in every n-th gateway life
    broker_every: int = 25  # restart the broker in every n-th gateway life
    interval_s: int = 5  # aggregation period
    fault_every_s: float = 12.0  # a scenario fault about this often
    drain_timeout_s: float = 240.0


class Chain:
    """Broker, meter simulator, platform simulator and gateway as processes in `workdir`."""

    def __init__(self, workdir: Path, options: Options, mosquitto: str) -> None:
        self.workdir = workdir
        self.options = options
        self.broker = Mosquitto(mosquitto, workdir / "broker", extra=("set_tcp_nodelay true",))
        self.base_port = free_port_range(options.meters)
        self.scenario = workdir / "scenario.toml"
        self.journal = workdir / "meters.journal"
        self.scenario.write_text(
            tomli_w.dumps(scenario(random.Random(options.seed), options)), encoding="utf-8"
        )
        ack_key = workdir / "platform-ack.key"
        ack_signer(ack_key)  # the platform's signing key, there before the gateway starts
        site = campaign_site(workdir, options, self.base_port, self.broker.port)
        site["mqtt"]["platform_ack_key"] = str(public_key_path(ack_key))  # acks verified
        self.config = write_site(workdir, site)
        self.meters = Proc(
            ["sim", "modbus", "--meters", str(options.meters), "--base-port", str(self.base_port),
             "--scenario", str(self.scenario), "--journal", str(self.journal)],
            workdir / "meters.log",
        )  # fmt: skip
        self.platform = Proc(
            ["sim", "platform", "--broker", self.broker.url, "--db", str(self.platform_db),
             "--ack-key", str(ack_key)],
            workdir / "platform.log",
        )  # fmt: skip
        self.gateway = Proc(["run", "-c", str(workdir / "site.toml")], workdir / "gateway.log")

    @property
    def platform_db(self) -> Path:
        return self.workdir / "platform.db"

    @property
    def gateway_db(self) -> Path:
        return self.config.store.path

    def stop_all(self) -> None:
        for p in (self.gateway, self.platform, self.meters):
            p.kill()
        self.broker.kill()

    # --- what the gateway's store says while it runs (WAL: readable alongside) -------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.gateway_db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.gateway_db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            conn.close()

    def pending_batches(self) -> int:
        rows = self.query("SELECT COUNT(*) FROM outbox WHERE state='pending'")
        return int(rows[0][0]) if rows else 0

    def unsealed_points(self) -> list[str]:
        """Counter points with a good reading after their last sealed period's end."""
        rows = self.query(
            "SELECT s.meter_id, s.point, MAX(r.ts_ns),"
            " (SELECT MAX(period_end_ns) FROM activity_records a"
            "  WHERE a.meter_id=s.meter_id AND a.point=s.point)"
            " FROM series s JOIN readings r ON r.series=s.id"
            " WHERE s.kind='counter' AND r.quality='good' GROUP BY s.id"
        )
        return [f"{m}/{p}" for m, p, last, end in rows if end is None or end <= last]

    def status_written_ns(self) -> int:
        try:
            status = json.loads(status_path_for(self.gateway_db).read_text(encoding="utf-8"))
            return int(status["written_ns"])
        except (OSError, ValueError, KeyError):
            return 0


def campaign_site(
    workdir: Path, options: Options, base_port: int, broker_port: int
) -> dict[str, Any]:
    """The demo's site for the campaign's meters and broker, every energy meter with its
    rated power (the simulator's) and a valid certificate, and short MQTT timeouts so that a
    killed peer is noticed within a gateway life."""
    site = demo_site(
        workdir,
        options.meters,
        base_port,
        broker_port,
        options.interval_s,
        "5",
        {
            "ack_timeout_s": 5.0,
            "keepalive_s": 5,
            "publish_timeout_s": 5.0,
            "batch_size": 4,
        },
    )
    today = datetime.now().date()
    template = next(m["calibration"] for m in site["meters"] if "calibration" in m)
    for i, meter in enumerate(site["meters"]):
        # its own (demo_site rates a 4th meter as the main meter the simulator has not)
        meter["rated_power_kw"] = Decimal(str(rated_kw(i)))
        meter["calibration"] = template | {
            "certificate_no": f"FAULTS-CAL-{i + 1:04d}",
            "calibration_date": today - timedelta(days=300),
            "due_date": today + timedelta(days=300),
        }
    site["balances"] = []  # the simulator process has no main meter
    return site


def scenario(rng: random.Random, options: Options) -> dict[str, Any]:
    """A fault about every `fault_every_s` on a random meter, over the planned campaign; the
    first ones go through every kind once, the counter faults first, so that a short
    campaign has them too."""
    first = (
        [f for f in FAULTS if f[0] in COUNTER_FAULTS],
        [f for f in FAULTS if f[0] not in COUNTER_FAULTS],
    )
    for kinds in first:
        rng.shuffle(kinds)
    planned = first[0] + first[1]
    events = []
    at = 3.0
    while at < options.duration_s + 30:
        kind, params, _ = (
            planned.pop(0) if planned else rng.choices(FAULTS, [w for *_, w in FAULTS])[0]
        )
        events.append({"at_s": round(at, 2), "meter": rng.randrange(options.meters),
                       "fault": kind, **params})  # fmt: skip
        at += rng.uniform(0.5, 1.5) * options.fault_every_s
    return {"events": events}


# --- the kill loop ------------------------------------------------------------------------------


def kill_loop(chain: Chain, options: Options, rng: random.Random) -> dict[str, Any]:
    """`options.kills` gateway lives ended by SIGKILL, platform kills and broker restarts
    among them. Returns what was done."""
    kills: Counter[str] = Counter()
    exits: Counter[int] = Counter()  # gateway exit codes found when its kill was due
    lives = []
    mean = options.duration_s / options.kills
    started = time.monotonic()
    for i in range(1, options.kills + 1):
        life = rng.uniform(0.05, 2 * mean - 0.05)
        plan: list[tuple[float, str]] = [(life, "gateway")]
        if i % options.platform_every == 0:
            plan.append((rng.uniform(0, life), "platform"))
        if i % options.broker_every == 0:
            plan.append((rng.uniform(0, life), "broker"))
        chain.gateway.start()
        born = time.monotonic()
        for at, what in sorted(plan):
            time.sleep(max(0.0, born + at - time.monotonic()))
            if what == "gateway":
                assert chain.gateway.proc is not None
                code = chain.gateway.proc.poll()
                if code is not None:  # it ended by itself: it should not (lock, crash, ...)
                    exits[code] += 1
                chain.gateway.kill()
                kills["gateway_sigkill"] += 1
                lives.append(time.monotonic() - born)
            elif what == "platform":
                chain.platform.kill()
                kills["platform_sigkill"] += 1
                time.sleep(rng.uniform(0.5, 3.0))  # down for a while
                chain.platform.start()
            else:
                hard = kills["broker_sigkill"] < kills["broker_sigterm"]
                chain.broker.kill() if hard else chain.broker.stop()
                kills["broker_sigkill" if hard else "broker_sigterm"] += 1
                time.sleep(rng.uniform(0.5, 3.0))
                chain.broker.start()
    return {
        "kills": dict(sorted(kills.items())),
        "gateway_life_s": {
            "min": round(min(lives), 2),
            "median": round(statistics.median(lives), 2),
            "max": round(max(lives), 2),
        },
        "gateway_exited_before_its_kill": {str(c): n for c, n in sorted(exits.items())},
        "loop_s": round(time.monotonic() - started, 1),
    }


def drain(chain: Chain, timeout_s: float) -> dict[str, Any]:
    """The gateway once more, undisturbed: the meters stop, it seals every period with
    readings and the platform acks all of it; then Ctrl-C (exit code reported)."""
    started = time.monotonic()
    begun = time.time_ns()
    chain.gateway.start()
    complete = True
    try:
        wait_until(lambda: chain.status_written_ns() > begun, 60, "the gateway writes its status")
        time.sleep(2 * chain.config.meters[0].connection.poll_interval_s)
    except TimeoutError:
        complete = False
    meters_exit = chain.meters.interrupt()
    try:
        wait_until(
            lambda: not chain.unsealed_points() and not chain.pending_batches(),
            timeout_s,
            "every period sealed and acked",
        )
    except TimeoutError:
        complete = False
    gateway_exit = chain.gateway.interrupt()
    platform_exit = chain.platform.interrupt()
    chain.broker.stop()
    return {
        "complete": complete,
        "unsealed_points": chain.unsealed_points(),
        "pending_batches": chain.pending_batches(),
        "exit_codes": {"gateway": gateway_exit, "platform": platform_exit, "meters": meters_exit},
        "drain_s": round(time.monotonic() - started, 1),
    }


# --- the comparison -----------------------------------------------------------------------------


def compare_records(chain: Chain) -> dict[str, Any]:
    """Every record (each revision) the gateway made, at the platform exactly once."""
    made = [r[0] for r in chain.query("SELECT record_id FROM activity_records")]
    store = PlatformStore(chain.platform_db)
    try:
        held = store.records(revisions=True)
        rejections = store.db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0]
    finally:
        store.db.close()
    ids = Counter(str(r["record_id"]) for r in held)
    keys = Counter((r["meter_id"], r["point"], r["period_start"], r["revision"]) for r in held)
    outbox = chain.query(
        "SELECT state, COALESCE(ack_status, ''), COUNT(*) FROM outbox GROUP BY 1, 2"
    )
    return {
        "gateway": len(made),
        "platform": len(held),
        "lost": len(set(made) - set(ids)),
        "duplicated": sum(n - 1 for n in ids.values()) + sum(n - 1 for n in keys.values()),
        "overlapping_periods": _overlaps(held),
        "unknown_at_platform": len(set(ids) - set(made)),
        "revisions": sum(1 for r in held if r["revision"]),
        "platform_rejections": int(rejections),
        "outbox": {f"{s}/{a}" if a else s: n for s, a, n in outbox},
        "batches_sent_more_than_once": (
            chain.query("SELECT COUNT(*) FROM outbox WHERE attempts > 1") or [(0,)]
        )[0][0],
    }


def _overlaps(held: list[dict[str, Any]]) -> int:
    """Latest-revision periods of one point that overlap another's (energy counted twice)."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in held:
        key = (r["meter_id"], r["point"], r["period_start"])
        if key not in latest or r["revision"] > latest[key]["revision"]:
            latest[key] = r
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for (meter, point, _), r in latest.items():
        spans.setdefault((meter, point), []).append((_ns(r["period_start"]), _ns(r["period_end"])))
    found = 0
    for runs in spans.values():
        runs.sort()
        found += sum(1 for (_, e), (s, _) in itertools.pairwise(runs) if s < e)
    return found


@dataclass
class Run:
    """Consecutive measured periods of one meter: their sums telescope, so what the platform
    and the simulator say differ only by what the run's two ends do."""

    platform_kwh: Decimal = Decimal(0)
    simulator_kwh: Decimal = Decimal(0)
    start_interpolated: bool = False
    end_interpolated: bool = False
    end_ns: int = 0

    @property
    def difference(self) -> Decimal:
        return self.platform_kwh - self.simulator_kwh

    def tolerance(self, step: Decimal) -> Decimal:
        """One register step (each end was read off a register that shows its counter less
        up to one step), and half a step more for each end the gateway interpolated (its
        share of a step is rounded to the register's resolution)."""
        return step * (1 + Decimal(self.start_interpolated + self.end_interpolated) / 2)


@dataclass
class MeterEnergy:
    runs: list[Run]
    records: int = 0
    not_measured_records: int = 0  # flagged by the gateway: it books less than counted, or 0
    not_measured_platform_kwh: Decimal = Decimal(0)
    not_measured_simulator_kwh: Decimal = Decimal(0)
    invented: int = 0  # flagged records booking more than counted (beyond the rounding)


def compare_energy(chain: Chain) -> dict[str, Any]:
    """Per meter, the platform's energy (latest revisions) against the simulator's counter
    over the same spans. A record's span runs between the instants its boundary values stood
    for: the boundary itself when interpolated (or read there), else the reading the value
    was held at or taken from, looked up in the gateway's store. The simulator's side is its
    exact counter at those instants (`_counter`), less any jump a fault made in between."""
    journal = FleetJournal(chain.journal)
    store = PlatformStore(chain.platform_db)
    try:
        received = [r for r in store.records() if r["point_quantity"] == ENERGY]
    finally:
        store.db.close()
    gateway = Store(chain.gateway_db)
    index = {m.id: i for i, m in enumerate(chain.config.meters)}
    registers = {m.id: _energy_point(chain.config, m.id) for m in chain.config.meters}
    steps = {m: register.resolution(Decimal(0)) or Decimal(0) for m, register in registers.items()}
    per_meter: dict[str, MeterEnergy] = {}
    try:
        with localcontext(EXACT):
            for r in sorted(received, key=lambda r: (r["meter_id"], _ns(r["period_start"]))):
                meter, point = str(r["meter_id"]), str(r["point"])
                e = per_meter.setdefault(meter, MeterEnergy([]))
                first, last = BoundaryValue(**r["start"]), BoundaryValue(**r["end"])
                start, end = _ns(r["period_start"]), _ns(r["period_end"])
                unmeasured = bool(NOT_MEASURED & set(r["flags"]))
                t0 = _measured(gateway, meter, point, start, first, unmeasured)
                t1 = _measured(gateway, meter, point, end, last, unmeasured)
                if t0 is None or t1 is None:
                    continue  # nothing measured in this period (no readings around it)
                i, register = index[meter], registers[meter]
                counted = (
                    _counter(journal, i, t1, register)
                    - _counter(journal, i, t0, register)
                    - Decimal(repr(journal.jumps_kwh(i, t0.ns / NS, t1.ns / NS)))
                )
                quantity = Decimal(str(r["quantity"]))
                if unmeasured:
                    e.not_measured_records += 1
                    e.not_measured_platform_kwh += quantity
                    e.not_measured_simulator_kwh += counted
                    alone = Run(Decimal(0), Decimal(0), first.interpolated, last.interpolated)
                    e.invented += quantity - counted > alone.tolerance(steps[meter])
                    continue
                if not e.runs or e.runs[-1].end_ns != start:
                    e.runs.append(Run(start_interpolated=first.interpolated))
                run = e.runs[-1]
                run.platform_kwh += quantity
                run.simulator_kwh += counted
                run.end_ns, run.end_interpolated = end, last.interpolated
                e.records += 1
    finally:
        gateway.close()
    out = {}
    for meter, e in sorted(per_meter.items()):
        step = steps[meter]
        platform_kwh = sum((run.platform_kwh for run in e.runs), Decimal(0))
        simulator_kwh = sum((run.simulator_kwh for run in e.runs), Decimal(0))
        out[meter] = {
            "platform_kwh": _shown(platform_kwh),
            "simulator_kwh": _shown(simulator_kwh),
            "difference_kwh": _shown(platform_kwh - simulator_kwh),
            "register_step_kwh": str(step),
            "measured_records": e.records,
            "measured_runs": len(e.runs),
            "largest_run_difference_kwh": _shown(
                max((run.difference for run in e.runs), key=abs, default=Decimal(0))
            ),
            "every_run_within_its_register_step": all(
                abs(run.difference) <= run.tolerance(step) for run in e.runs
            ),
            "not_measured_records": e.not_measured_records,
            "not_measured_platform_kwh": _shown(e.not_measured_platform_kwh),
            "not_measured_simulator_kwh": _shown(e.not_measured_simulator_kwh),
            "not_measured_booking_more_than_counted": e.invented,
        }
    return out


def _energy_point(config: SiteConfig, meter_id: str) -> PointSpec:
    meter = next(m for m in config.meters if m.id == meter_id)
    return next(p for p in meter.points if p.quantity is Quantity.ACTIVE_ENERGY_IMPORT)


@dataclass(frozen=True)
class Instant:
    """When a boundary's value was the counter's, and the register value read then (None
    when the boundary was interpolated between readings)."""

    ns: int
    read: Decimal | None


def _measured(
    store: Store, meter: str, point: str, t: int, b: BoundaryValue, unmeasured: bool
) -> Instant | None:
    """The instant a boundary value stands for (None when no reading is near). In a record
    with a step not counted (`unmeasured`), a boundary without value lies in such a step
    (or an exchange): the span is taken to the boundary itself, so the simulator's side is
    all the counter moved in the period, and a record booking more than that invented it."""
    if b.distance_ns is None:
        return None
    if b.interpolated or (b.value is None and unmeasured):
        return Instant(t, None)
    if b.distance_ns == 0:
        return Instant(t, b.value)
    if b.value is None:  # not measured yet: the value is the first reading after
        first = t + b.distance_ns
        after = store.readings(meter, point, first, first + 1)
        good = [r.value for r in after if r.quality.status == "good"]
        assert good, f"{meter}/{point}: no good reading {b.distance_ns} ns after {t}"
        return Instant(first, good[0])
    near = store.readings(meter, point, t - 600 * NS, t + 1)
    held = [r for r in near if r.quality.status == "good" and r.value == b.value]
    assert held, f"{meter}/{point}: no reading of the boundary value {b.value} before {t}"
    return Instant(held[-1].ts_ns, b.value)


def _counter(journal: FleetJournal, index: int, at: Instant, register: PointSpec) -> Decimal:
    """The simulator's counter at an instant, exactly (before its register's resolution and
    wrap). At a reading, no more than the top of the register step it showed: a reading is
    stamped when the answer arrived, and the meter read its counter up to a round trip
    before, by when the counter may have passed that step."""
    exact = Decimal(repr(journal.counter_kwh(index, at.ns / NS)))
    if at.read is None:
        return exact
    read, modulus = at.read, register.counter_modulus()
    if modulus:  # the register's value, unwrapped as the exact counter is
        read += modulus * ((exact - read) / modulus).to_integral_value()
    return min(exact, read + (register.resolution(read) or 0))


def _shown(kwh: Decimal) -> str:
    return str(kwh.quantize(Decimal("0.000001")))


def _ns(iso: str) -> int:
    return datetime_to_ns(datetime.fromisoformat(iso))


# --- the whole campaign -------------------------------------------------------------------------


def run_campaign(workdir: Path, options: Options, mosquitto: str) -> dict[str, Any]:
    """Run the campaign in `workdir` and return its results (printed as JSON by `main`)."""
    started = time.monotonic()
    rng = random.Random(options.seed)
    chain = Chain(workdir, options, mosquitto)
    try:
        chain.broker.start()
        chain.meters.start()
        wait_until(chain.journal.exists, 30, "the meter simulator serving")
        chain.platform.start()
        loop = kill_loop(chain, options, rng)
        drained = drain(chain, options.drain_timeout_s)
        records = compare_records(chain)
        energy = compare_energy(chain)
    finally:
        chain.stop_all()
    faults = Counter(e["fault"] for e in scenario(random.Random(options.seed), options)["events"])
    journal = FleetJournal(chain.journal)
    ok = (
        drained["complete"]
        and drained["exit_codes"]["gateway"] == 0
        and not loop["gateway_exited_before_its_kill"]
        and records["lost"] == 0
        and records["duplicated"] == 0
        and records["overlapping_periods"] == 0
        and records["unknown_at_platform"] == 0
        and all(m["every_run_within_its_register_step"]
                and not m["not_measured_booking_more_than_counted"] for m in energy.values())
    )  # fmt: skip
    return {
        "bench": "faults",
        "options": asdict(options),
        "ok": ok,
        **loop,
        "scenario": {"faults_planned": dict(sorted(faults.items())), "applied": journal.events},
        "drain": drained,
        "records": records,
        "energy": energy,
        "gateway_log": _log_summary(chain.gateway.output()),
        "wall_s": round(time.monotonic() - started, 1),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "workdir": str(workdir),
    }


def _log_summary(text: str) -> dict[str, int]:
    """How often the gateway's log says it started, and any tracebacks (there should be none)."""
    return {
        "starts": len(re.findall(r"tanji: gateway \S+ running", text)),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "errors": len(re.findall(r"\bERROR\b", text)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="gateway SIGKILLs")
    parser.add_argument(
        "--duration", type=float, default=defaults.duration_s,
        help="planned length of the kill loop, s (a gateway lives duration/kills on average)",
    )  # fmt: skip
    parser.add_argument("--meters", type=int, default=defaults.meters)
    parser.add_argument("--platform-every", type=int, default=defaults.platform_every)
    parser.add_argument("--broker-every", type=int, default=defaults.broker_every)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.kills < 1 or args.duration <= 0 or not 1 <= args.meters <= 50:
        parser.error("--kills >= 1, --duration > 0, --meters 1..50")
    mosquitto = _mosquitto_binary()
    if mosquitto is None:
        sys.exit("mosquitto is not installed (`make test` installs it)")
    options = Options(
        seed=args.seed,
        kills=args.kills,
        duration_s=args.duration,
        meters=args.meters,
        platform_every=args.platform_every,
        broker_every=args.broker_every,
    )
    workdir = Path(tempfile.mkdtemp(prefix="tanji-faults-"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    try:
        result = run_campaign(workdir, options, mosquitto)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
