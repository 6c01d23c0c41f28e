"""One gateway per store: an exclusive flock(2) on a lock file next to the store, held by
`tanji run` for its whole life. The kernel drops it when the process ends in any way (also
SIGKILL and power loss), so a stale lock file never blocks a restart. Read-only commands do
not take it. Never deletes the lock file (that would let two holders lock two files)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gateway.store.sqlite import StoreError


def lock_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".lock")


class StoreInUse(StoreError):
    """Another process runs a gateway on this store."""


class StoreLock:
    """The held lock; `release()` (or the end of the process) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store_path: Path) -> StoreLock:
        """Lock the store for this process, or StoreInUse naming the holder's PID."""
        path = lock_path_for(store_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{store_path}: cannot create the lock file {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StoreInUse(
                f"store {store_path} is in use by another gateway"
                + (f" (PID {holder})" if holder else "")
                + f"; one gateway per store (lock {path}): stop that one first"
            ) from None
        with contextlib.suppress(OSError):  # the PID is for the message above only
            text = f"{os.getpid()}\n".encode()
            os.pwrite(fd, text, 0)
            os.ftruncate(fd, len(text))
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
