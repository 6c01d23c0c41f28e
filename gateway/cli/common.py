"""What every command of the face shares: the consoles, the event loop, the site option, the
simulators' --scenario file, and the one place where an error of tanji becomes an exit code
(`TanjiCommands`).

Nothing here knows a command; nothing in the core imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Collection, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from gateway.config import ConfigError
from gateway.errors import EXIT_BAD_INPUT, TanjiError, TanjiFailure

if TYPE_CHECKING:  # the simulators are imported when a command runs them: `tanji` starts fast
    from simulators.modbus_fleet import FaultKind, Scenario

log = logging.getLogger("tanji")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

SiteOption = Annotated[Path, typer.Option("--config", "-c", help="site configuration (TOML)")]


class TanjiCommands(TyperGroup):
    """The `tanji` command group. An error of tanji that a command does not handle itself
    ends here: one line (or a config error's list of problems) on stderr, never a traceback,
    and the error's own exit code (gateway.errors: 2 bad input, 1 a failure). A failure's
    traceback is logged at INFO, so a command run with --verbose shows where it came from."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer types it with its own click)
        try:
            return super().invoke(ctx)
        except TanjiError as exc:
            print_error(exc)
            if isinstance(exc, TanjiFailure):  # not the input's fault: where, with --verbose
                log.info("where the failure above came from:", exc_info=exc)
            raise typer.Exit(exc.exit_code) from None


def print_error(exc: TanjiError) -> None:
    if isinstance(exc, ConfigError):
        print_config_error(exc)
    else:
        err.print(f"tanji: {exc}", highlight=False, markup=False)


def print_config_error(exc: ConfigError) -> None:
    err.print(f"[bold red]{exc.source}[/]: {len(exc.problems)} problem(s)", highlight=False)
    for problem in exc.problems:
        err.print(f"  {problem}", highlight=False, markup=False)


def print_problems(problems: list[str]) -> None:
    """Problems with a command's options, one a line (the caller exits 2)."""
    for problem in problems:
        err.print(problem, highlight=False, markup=False)


def exit_on_problems(problems: list[str]) -> None:
    """Problems with a command's options, if any: each on a line, then exit 2."""
    print_problems(problems)
    if problems:
        raise typer.Exit(EXIT_BAD_INPUT)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # asyncua.server: the simulated plant's notes on its own unsecured endpoint (not the site's)
    for noisy in ("pymodbus", "amqtt", "transitions", "asyncio", "asyncua.server"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop (libuv: about a third less CPU per Modbus request
    than the default loop, bench/README.md), or on asyncio's loop where uvloop is missing or
    TANJI_EVENT_LOOP=asyncio is set."""
    factory = None
    if os.environ.get("TANJI_EVENT_LOOP", "uvloop") != "asyncio":
        with contextlib.suppress(ImportError):
            import uvloop

            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def stop_on_signals() -> asyncio.Event:
    """An event set by Ctrl-C or SIGTERM (systemd stop), so shutdowns are orderly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def scenario_option(
    path: Path | None, unplayable: Collection[FaultKind], why: str, problems: list[str]
) -> Scenario | None:
    """The --scenario file a simulator replays (the Modbus fleet and the OPC UA plant read
    the same files), or None; what is wrong with it goes to `problems`: a file that cannot be
    read, or events of faults in `unplayable` (told by `why`, `{faults}` naming them)."""
    from simulators.modbus_fleet import Scenario

    if path is None:
        return None
    try:
        plan = Scenario.load(path)
    except ValueError as exc:
        problems.append(f"--scenario: {exc}")
        return None
    faults = sorted({e.fault.value for e in plan.events if e.fault in unplayable})
    if faults:
        problems.append("--scenario: " + why.format(faults=", ".join(faults)))
    return plan
