"""tanji's own errors: one base, and the exit code each kind of error means for a command.

Every error tanji raises on purpose derives from `TanjiError`; its message says what was wrong
and where, and its `exit_code` is what a `tanji` command ends with when it stops one:
- 0 ok,
- 1 a finding, or a failure to look into (a service manager restarts `tanji run` on it),
- 2 bad usage or bad input (a file, a flag, a message on the wire that is wrong).
The command line maps errors to exit codes through `exit_code` alone (gateway/cli).
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK, EXIT_FINDING, EXIT_BAD_INPUT = 0, 1, 2


class TanjiError(Exception):
    """The base of tanji's errors (bad input unless a subclass says otherwise)."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT


class TanjiFailure(TanjiError):
    """Something failed that is not the input's fault: a part stopped, a peer refused, a
    device sent what cannot be used. Signals a part raises and catches itself (a garbled
    Modbus answer, registers that are not a number) derive from it too, so one that escapes
    by a bug is not shown as the user's bad input; `-v` shows where it came from."""

    exit_code: ClassVar[int] = EXIT_FINDING
