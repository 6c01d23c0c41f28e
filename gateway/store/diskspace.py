"""The filesystem under the store: whether an error means "disk full", how much room is left,
and the reserve: a file of RESERVE_BYTES the gateway keeps next to its store and gives back
when the disk fills, so that its status file, the outbox's acks and the aggregator's records
still find room while new readings are refused. Deletes nothing but its own reserve file."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_BYTES = 4 * 1024 * 1024
NEARLY_FULL_BYTES = 1024 * 1024  # an I/O error with less than this free counts as disk full
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def reserve_path_for(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".reserve")


def free_bytes(path: Path) -> int | None:
    """Bytes this process may still write on the filesystem holding `path` (root may use the
    blocks reserved for root); None when the filesystem cannot say."""
    try:
        st = os.statvfs(path if path.is_dir() else path.parent)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return int(blocks * st.f_frsize)


def is_disk_full(exc: BaseException, path: Path) -> bool:
    """Whether `exc` (raised writing at `path`) means the filesystem has no room: ENOSPC or
    EDQUOT, SQLite's SQLITE_FULL, or an SQLite I/O error (SQLite reports a failed fsync or
    a failed growth of its shared-memory file that way) while the filesystem is nearly full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if not isinstance(exc, sqlite3.Error):
        return False
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return True
    if name.startswith("SQLITE_IOERR"):
        free = free_bytes(path)
        return free is not None and free < NEARLY_FULL_BYTES
    return False


def describe_free(path: Path) -> str:
    free = free_bytes(path)
    return "free space unknown" if free is None else f"{free / 1e6:.1f} MB free"


class Reserve:
    """A file of `size` bytes, allocated on disk, that can be given back when the disk fills
    and taken again once there is room for it and `margin` bytes more."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size

    @property
    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def take(self, margin: int = 0) -> bool:
        """Allocate the reserve (no-op when held) if the filesystem has room for it and
        `margin` bytes more; True when it is held afterwards."""
        if self.held:
            return True
        free = free_bytes(self.path)
        if free is None or free < self.size + margin:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks on disk, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.debug("reserve %s not taken: %s", self.path, exc)
            return False
        return True

    def release(self) -> bool:
        """Give the reserve's blocks back to the filesystem; True if it was held."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
