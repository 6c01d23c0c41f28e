"""A virtual RS-485 line: two pseudo-terminals joined like the ends of a cable, at a baud rate.

Each end is a real tty device (`/dev/pts/N`) that pyserial opens like any serial port. Bytes
written at one end arrive at the other after the time they would take on the wire: the line is
half-duplex, so a frame waits until the line is free and then occupies it for
`len(frame) * bits_per_char / baudrate` seconds. That makes RTU timing (and the throughput
benchmark) honest without hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty


class VirtualSerialLine:
    def __init__(self, baudrate: int = 9600, bits_per_char: int = 11) -> None:
        self.char_time_s = bits_per_char / baudrate
        self._fds: list[int] = []
        self._masters: tuple[int, int] = (-1, -1)
        self.ends: tuple[str, str] = ("", "")
        self._busy_until = 0.0
        self.bytes_carried = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        # the slave ends stay open here too, so a client closing its end does not hang up
        self._fds = [m1, s1, m2, s2]
        self._masters = (m1, m2)
        self.ends = (os.ttyname(s1), os.ttyname(s2))
        loop.add_reader(m1, self._carry, m1, m2)
        loop.add_reader(m2, self._carry, m2, m1)

    def _carry(self, source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._busy_until)
        self._busy_until = start + len(data) * self.char_time_s
        self.bytes_carried += len(data)
        loop.call_at(self._busy_until, self._deliver, target, data)

    @staticmethod
    def _deliver(target: int, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(target, data)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            if fd >= 0:
                loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        self._masters = (-1, -1)

    async def __aenter__(self) -> VirtualSerialLine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
