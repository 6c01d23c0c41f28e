"""The face maps an error of tanji to its exit code in one place (gateway.cli.common): one
line on stderr, never a traceback, exit 2 for bad input and 1 for a failure, in a command of
the top level and in one of a group alike."""

from __future__ import annotations

from pathlib import Path

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
