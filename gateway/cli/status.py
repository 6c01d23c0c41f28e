"""`tanji status`: the running gateway's status file, shown as a table, JSON or Prometheus
metrics. Reads the file only; never talks to the gateway."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.cli.common import (
    SiteOption,
    err,
    out,
)
from gateway.config import load_site_config
from gateway.errors import EXIT_FINDING
from gateway.runtime.status_file import UNACKED_ATTENTION


def status(
    config: SiteOption,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw snapshot")] = False,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="print Prometheus metrics (node_exporter textfile format); exit 0 whenever"
            " there is a status to translate",
        ),
    ] = False,
) -> None:
    """Show how the running gateway's meters are polled (from its status file).

    Exit 1 when the gateway is not running (no fresh status) or something needs attention:
    a meter (its last reading was bad, or points were disabled), the store (refusing new
    readings: disk full, at its disk cap with nothing to evict; the cause is shown),
    aggregation (failed passes, late readings set aside for evicted periods), calibration
    (records held back for want of a valid calibration), the outbox (dead letters), the
    platform link (down: the reason is shown), the platform (a batch waits for its ack longer
    than 3 x ack_timeout_s: the broker is up but nobody acknowledges).

    Example: tanji status --config /etc/tanji/site.toml
    """
    from gateway.runtime.status_file import not_a_status, read_status

    site = load_site_config(config)
    # no status file, or not one: exit 1 with the reason (gateway.cli.common)
    status = read_status(site.store.path, site.delivery.ack_timeout_s)
    if metrics:
        from gateway.runtime.metrics import prometheus_text

        print(prometheus_text(status.snapshot, status.age_s), end="")
        return
    try:
        table = _status_table(status.snapshot, status.age_s, site.delivery.ack_timeout_s)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise not_a_status(status.path, exc) from None
    if as_json:
        print(json.dumps(status.snapshot, indent=2))
    else:
        out.print(table)
    if status.stale:
        err.print(f"status is {status.age_s:.0f} s old: is the gateway running?")
    if status.stale or status.attention:
        raise typer.Exit(EXIT_FINDING)


def _link(link: dict[str, Any] | None) -> str:
    """The platform link part of the status caption."""
    if not link:
        return ""
    dropped = link.get("acks_dropped") or {}
    ignored = (
        f" · {sum(dropped.values())} messages on the ack topic dropped ("
        + ", ".join(f"{kind} {n}" for kind, n in sorted(dropped.items()))
        + ")"
        if dropped
        else ""
    )
    if link.get("batches_refused"):  # one batch refused by the next hop, the link is fine
        ignored += (
            f" · {link['batches_refused']} batch sends REFUSED by the platform (last:"
            f" {link.get('last_refusal')})"
        )
    if link.get("connected"):
        return " · platform link up" + ignored
    return f" · PLATFORM LINK DOWN ({link.get('last_error') or 'connecting'})" + ignored


def _backlog(outbox: dict[str, Any] | None, ack_timeout_s: float) -> str:
    """The outbox part of the status caption: backlog, its age, dead letters."""
    if not outbox:
        return ""
    age = outbox.get("oldest_pending_age_s")
    text = f" · backlog {outbox['pending_batches']} batches" + (
        f" (oldest {age:.0f} s)" if age is not None else ""
    )
    if outbox.get("dead_letters"):
        text += f" · {outbox['dead_letters']} DEAD LETTERS (tanji outbox list)"
    if age is not None and age > UNACKED_ATTENTION * ack_timeout_s:
        text += " · NOT ACKNOWLEDGED: is the platform receiving?"
    return text


def _asked_again(at_s: float | None) -> str:
    """When a disabled point is asked again, for the status table: ' (asked again in 12 min)'."""
    if at_s is None:
        return ""
    wait = at_s - time.time()
    if wait <= 0:
        return " (asked again at its next cycle)"
    return (
        f" (asked again in {wait:.0f} s)"
        if wait < 120
        else f" (asked again in {wait / 60:.0f} min)"
    )


def _status_table(snapshot: dict[str, Any], age_s: float, ack_timeout_s: float) -> Table:
    table = Table(title=f"gateway {snapshot['gateway_id']} — status {age_s:.0f} s old")
    table.caption = (
        f"store {snapshot.get('store_used_mb', 0)} MB used"
        + (
            f" — STORE REFUSES NEW READINGS: {snapshot['store_refusing']}"
            f" ({snapshot.get('readings_pending', 0)} waiting in memory)"
            if snapshot.get("store_refusing")
            else " — AT ITS DISK CAP: new readings refused"
            if snapshot.get("store_over_cap")
            else ""
        )
        + f" · {snapshot.get('readings_refused', 0)} readings refused"
        + _backlog(snapshot.get("outbox"), ack_timeout_s)
        + _link(snapshot.get("link"))
        + f" · records {snapshot.get('records_created', 0)}"
        + f" ({snapshot.get('records_revised', 0)} revisions)"
        + (
            f" · {snapshot['readings_set_aside']} late readings SET ASIDE (their periods were"
            " evicted)"
            if snapshot.get("readings_set_aside")
            else ""
        )
        + (
            f" · {snapshot['records_held']} records HELD (no valid calibration;"
            " send_without_valid_calibration = false)"
            if snapshot.get("records_held")
            else ""
        )
        + (
            f" · {snapshot['aggregation_failures']} FAILED aggregation passes (see the log)"
            if snapshot.get("aggregation_failures")
            else ""
        )
    )
    table.add_column("meter")
    table.add_column("problem", overflow="fold")
    for col in ("readings (bad)", "cycles (overrun)", "timeouts (retried)", "p50/p95 ms"):
        table.add_column(col, justify="right")
    labelled = any(st.get("labels") for st in snapshot["meters"].values())
    if labelled:  # what the lines make now (product code, production order)
        table.add_column("making", overflow="fold")
    for meter_id, st in snapshot["meters"].items():
        poll = st["poll"]
        latency = poll["latency_ms"]
        problems = [st["last_reason"]] if st["last_reason"] else []
        retry_at = poll.get("disabled_retry_at", {})
        problems += [
            f"disabled: {p}{_asked_again(retry_at.get(p))}" for p in poll["disabled_points"]
        ]
        problems += [f"{name} x{n}" for name, n in poll["exceptions"].items()]
        problems += [f"{name} x{n}" for name, n in poll.get("bad_responses", {}).items()]
        p50, p95 = (latency[q] for q in ("p50", "p95"))
        table.add_row(
            meter_id,
            "; ".join(problems) or "ok",
            f"{st['readings']} ({st['bad']})",
            f"{poll['cycles']} ({poll['overruns']})",
            f"{poll['timeouts']} ({poll['retries']})",
            f"{p50:.1f}/{p95:.1f}" if p50 is not None and p95 is not None else "-",
            *([" / ".join(st.get("labels", {}).values()) or "-"] if labelled else []),
        )
    return table
