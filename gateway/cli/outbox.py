"""`tanji outbox list|retry|release|discard`: batches that are not on their way
(cloud_sync's outbox)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from gateway.cli.common import (
    SiteOption,
    err,
    out,
)
from gateway.config import SiteConfig, load_site_config
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING
from gateway.store.sqlite import Store, StoreError

if TYPE_CHECKING:
    from cloud_sync import Outbox


def _outbox(site: SiteConfig) -> Outbox:
    import cloud_sync

    try:
        store = Store(site.store.path)
        cloud_sync.create_schema(store.conn)
    except (StoreError, sqlite3.Error) as exc:
        err.print(f"tanji: {site.store.path}: {exc}", highlight=False, markup=False)
        raise typer.Exit(EXIT_FINDING) from None
    return cloud_sync.Outbox(store.conn)


def outbox_list(
    config: SiteOption,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Dead letters and held batches, oldest first. Exit 1 when there are any.

    Example: tanji outbox list -c site.toml
    """
    parked = _outbox(load_site_config(config)).parked()
    if as_json:
        print(json.dumps([p.__dict__ for p in parked], indent=2))
    else:
        table = Table(title="outbox: batches not on their way")
        for col in ("batch", "state", "records", "created (UTC)", "reason"):
            table.add_column(col, overflow="fold")
        for p in parked:
            created = datetime.fromtimestamp(p.created_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(p.batch_id, p.state, str(p.record_count), created, p.reason or "")
        out.print(table)
    if parked:
        raise typer.Exit(EXIT_FINDING)


def _outbox_targets(outbox: Outbox, batch: str | None, every: bool, state: str) -> list[str]:
    if (batch is None) == (not every):
        err.print("give a batch id or --all")
        raise typer.Exit(EXIT_BAD_INPUT)
    return [p.batch_id for p in outbox.parked() if p.state == state] if every else [batch or ""]


def _outbox_apply(action: Callable[[str], str], targets: list[str], verb: str) -> None:
    from cloud_sync import OutboxError

    for batch_id in targets:
        try:
            was = action(batch_id)
        except OutboxError as exc:
            err.print(str(exc), highlight=False, markup=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        err.print(f"{batch_id}: {was} -> {verb}", highlight=False)


def _requeue(
    config: Path,
    batch: str | None,
    every: bool,
    state: str,
    move: Callable[[Outbox], Callable[[str, int], str]],
) -> None:
    """Back on their way: the given batch, or --all batches in `state`."""
    outbox = _outbox(load_site_config(config))
    targets = _outbox_targets(outbox, batch, every, state)
    _outbox_apply(lambda b: move(outbox)(b, time.time_ns()), targets, "pending")


def outbox_retry(
    config: SiteOption,
    batch: Annotated[str | None, typer.Argument(help="batch id (see `tanji outbox list`)")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
) -> None:
    """Send dead letters again (after the cause on the platform side was fixed).

    Example: tanji outbox retry -c site.toml --all
    """
    _requeue(config, batch, every, "rejected", lambda outbox: outbox.retry)


def outbox_release(
    config: SiteOption,
    batch: Annotated[str | None, typer.Argument(help="batch id (see `tanji outbox list`)")] = None,
    every: Annotated[bool, typer.Option("--all", help="every held batch")] = False,
) -> None:
    """Send held batches (records without a valid calibration) after all.

    Example: tanji outbox release -c site.toml --all
    """
    _requeue(config, batch, every, "held", lambda outbox: outbox.release)


def outbox_discard(
    config: SiteOption,
    batch: Annotated[str, typer.Argument(help="batch id (see `tanji outbox list`)")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept with the batch)")],
) -> None:
    """Give up on a dead letter or a held batch: kept in the store, marked discarded.

    Example: tanji outbox discard -c site.toml 3f2a... --reason "duplicate of a manual upload"
    """
    outbox = _outbox(load_site_config(config))
    _outbox_apply(lambda b: outbox.discard(b, reason, time.time_ns()), [batch], "discarded")
