"""The face maps an error of tanji to its exit code in one place (gateway.cli.common): one
line on stderr, never a traceback, exit 2 for bad input and 1 for a failure, in a command of
the top level and in one of a group alike."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli.common import TanjiCommands
from gateway.errors import EXIT_BAD_INPUT, EXIT_FINDING, TanjiError, TanjiFailure

EXAMPLE = Path(__file__).parents[2] / "deploy" / "site.example.toml"


def _app_raising(exc: Exception) -> typer.Typer:
    face = typer.Typer(cls=TanjiCommands, pretty_exceptions_enable=False)
    group = typer.Typer()

    @face.command()
    def top() -> None:
        raise exc

    @group.command()
    def inner() -> None:
        raise exc

    face.add_typer(group, name="group")
    return face


def test_bad_input_exits_2_with_one_line_and_no_traceback():
    for args in (["top"], ["group", "inner"]):
        result = CliRunner().invoke(_app_raising(TanjiError("meters[0].port: not a port")), args)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert result.output.strip() == "tanji: meters[0].port: not a port"
        assert "Traceback" not in result.output


def test_a_failure_exits_1():
    result = CliRunner().invoke(_app_raising(TanjiFailure("the broker refused us")), ["top"])
    assert result.exit_code == EXIT_FINDING, result.output
    assert "tanji: the broker refused us" in result.output


def test_a_failure_leaves_its_traceback_for_verbose_and_bad_input_does_not(
    caplog: pytest.LogCaptureFixture,
):
    """At INFO (what --verbose shows) a failure's traceback is logged; bad input's is not:
    its message says all there is."""
    caplog.set_level(logging.INFO, logger="tanji")
    CliRunner().invoke(_app_raising(TanjiFailure("the broker refused us")), ["top"])
    CliRunner().invoke(_app_raising(TanjiError("meters[0].port: not a port")), ["top"])
    traced = [r for r in caplog.records if r.exc_info]
    assert len(traced) == 1
    assert isinstance(traced[0].exc_info[1], TanjiFailure)  # type: ignore[index]


def test_signals_from_devices_are_not_taken_for_bad_input():
    """Errors a part raises on what a device sent, and catches itself: were one to escape,
    it ends the command as a failure (exit 1), not as the user's bad input (exit 2)."""
    from collectors.modbus.decode import DecodeError
    from collectors.modbus.mbap import Garbled
    from simulators.platform_store import Refused

    for signal in (DecodeError, Garbled, Refused):
        assert issubclass(signal, TanjiFailure), signal
    garbled = Garbled("not an MBAP header: 0000")
    result = CliRunner().invoke(_app_raising(garbled), ["top"])
    assert result.exit_code == EXIT_FINDING, result.output


def test_other_exceptions_are_not_taken_for_bad_input():
    result = CliRunner().invoke(_app_raising(RuntimeError("a bug")), ["top"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)  # a bug shows as one, not as exit 2


def test_the_tanji_command_maps_errors_in_one_place(tmp_path):
    """A store that is not a store (StoreError, bad input) ends `tanji report` with exit 2
    through the face's handler."""
    (tmp_path / "tanji.db").write_bytes(b"not a database, but a file of its own size" * 100)
    site = tmp_path / "site.toml"  # the example's store is tanji.db beside it
    site.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    result = CliRunner().invoke(app, ["report", "-c", str(site)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.output.startswith("tanji: ")
    assert "Traceback" not in result.output
