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
    """Something failed that is not the input's fault: a part stopped, a peer refused."""

    exit_code: ClassVar[int] = EXIT_FINDING
