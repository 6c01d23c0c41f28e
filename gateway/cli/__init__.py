"""The `tanji` command: the face over the core. Each command parses its options, calls one
function of the core, and prints; each group of commands has its own module, and this one is
the table of them. Only the face may import `simulators` (import-linter, pyproject.toml).

Exit codes: 0 ok, 1 a finding (something needs attention), 2 bad usage or bad input
(gateway.errors). Never shows a traceback for bad input: an error of tanji that a command does
not handle itself is mapped in one place (gateway.cli.common.TanjiCommands).
"""

from __future__ import annotations

import typer

from gateway.cli import (
    calibration,
    demo,
    discover,
    keys,
    outbox,
    report,
    sim_modbus,
    sim_opcua,
    sim_pki,
    sim_platform,
    site,
    status,
    trace,
)
from gateway.cli.common import TanjiCommands

__all__ = ["app", "main"]

app = typer.Typer(
    cls=TanjiCommands,
    help="tanji: edge metering gateway for product carbon-label certification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("check-config")(site.check_config)
app.command()(site.run)
app.command()(status.status)
app.command()(report.report)
app.command()(trace.trace)
app.command()(demo.demo)

sim_app = typer.Typer(help="Run simulators of meters and of the platform.", no_args_is_help=True)
sim_app.command("modbus")(sim_modbus.sim_modbus)
sim_app.command("opcua")(sim_opcua.sim_opcua)
sim_app.command("platform")(sim_platform.sim_platform)
sim_app.command("pki")(sim_pki.sim_pki)
app.add_typer(sim_app, name="sim")

calibration_app = typer.Typer(
    help="The calibration registry: certificates of every meter, append-only.",
    no_args_is_help=True,
)
calibration_app.command("list")(calibration.calibration_list)
calibration_app.command("due")(calibration.calibration_due)
calibration_app.command("import")(calibration.calibration_import)
calibration_app.command("revoke")(calibration.calibration_revoke)
calibration_app.command("history")(calibration.calibration_history)
app.add_typer(calibration_app, name="calibration")

outbox_app = typer.Typer(
    help="Batches that are not on their way: dead letters (rejected by the platform) and held"
    " batches (records without a valid calibration).",
    no_args_is_help=True,
)
outbox_app.command("list")(outbox.outbox_list)
outbox_app.command("retry")(outbox.outbox_retry)
outbox_app.command("release")(outbox.outbox_release)
outbox_app.command("discard")(outbox.outbox_discard)
app.add_typer(outbox_app, name="outbox")

discover_app = typer.Typer(
    help="Find devices and the meter profiles that fit them.", no_args_is_help=True
)
discover_app.command("opcua")(discover.discover_opcua)
discover_app.command("modbus")(discover.discover_modbus)
app.add_typer(discover_app, name="discover")

keys_app = typer.Typer(help="Create the gateway's own certificates.", no_args_is_help=True)
keys_app.command("opcua")(keys.keys_opcua)
keys_app.command("https")(keys.keys_https)
app.add_typer(keys_app, name="keys")


def main() -> None:
    app()
