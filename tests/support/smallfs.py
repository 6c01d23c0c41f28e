"""Small real filesystems for disk-full and disk-failure tests: a tmpfs of a few MB, or an ext4
image on a loop device that can be shut down (every write then fails with EIO, as on a dying
disk). Mounting needs root; without it, or where the kernel refuses, the test is skipped and
says why."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32), as xfs_io's `shutdown`
EXT4_GOING_FLAGS_NOLOGFLUSH = 2


def _mount(args: list[str], what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {what} here: {done.stderr.strip()}")


def _umount(mountpoint: Path) -> None:
    # lazy: a process the test failed to stop must not leave the mount behind for good
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MB mounted at `mountpoint` (created) for the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mountpoint)], "a tmpfs")
    try:
        yield mountpoint
    finally:
        _umount(mountpoint)


@contextlib.contextmanager
def ext4_image(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    """An ext4 filesystem in an image file next to `mountpoint`, loop-mounted there."""
    image = mountpoint.with_name(mountpoint.name + ".img")
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.decode(errors='replace').strip()}")
    mountpoint.mkdir(parents=True, exist_ok=True)
    _mount(["-o", "loop", str(image), str(mountpoint)], "an ext4 image (loop device)")
    try:
        yield mountpoint
    finally:
        _umount(mountpoint)


def shut_down(mountpoint: Path) -> None:
    """Shut the ext4 filesystem down: from now on every write to it fails with EIO."""
    fd = os.open(mountpoint, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def fill(directory: Path) -> Path:
    """Write a file in `directory` until the filesystem has no block left; returns it (delete
    it to give the space back)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = bytes(chunk)
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler
