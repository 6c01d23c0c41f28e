"""The server side of TLS over an asyncio stream, through the ssl module's memory BIOs.

asyncio's own server TLS (`start_server(ssl=...)`, `start_tls`) drops the connection when a
handshake fails without sending the TLS alert that says why, so a client whose certificate
is refused sees only "connection reset". This sends the alert first, as nginx or Mosquitto
do: the gateway can then tell the operator that its certificate was refused (certificate
required, unknown CA, expired). It never decides what to trust: the SSLContext does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

READ_CHUNK = 64 * 1024
LINGER_S = 2.0  # after a refusal: time for the client to read the alert before the close


class TlsStream:
    """One server-side TLS connection on `reader`/`writer` (plain TCP)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)

    async def handshake(self, timeout_s: float) -> None:
        """The handshake, the client's certificate verified; the SSLError (or TimeoutError,
        OSError) that ended it, once the alert is sent (then `linger()` before closing)."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        self._tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await self._flush()
                        await self._fill()
        except ssl.SSLError:
            with contextlib.suppress(OSError):
                await self._flush()  # the alert
            raise
        await self._flush()

    async def read(self) -> bytes:
        """Some of the client's plaintext; b"" when the client has closed."""
        while True:
            try:
                return self._tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._flush()  # e.g. a TLS 1.3 key update's answer
                await self._fill()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def write(self, data: bytes) -> None:
        self._tls.write(data)  # into a memory BIO: never wants to wait
        await self._flush()

    async def close(self) -> None:
        """close_notify, best effort (the caller closes the socket)."""
        with contextlib.suppress(ssl.SSLError, OSError):
            self._tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()

    async def _fill(self) -> None:
        data = await self._reader.read(READ_CHUNK)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def linger(self) -> None:
        """Half-close and read what the client still sends until it closes (or LINGER_S):
        closing with unread data would reset the connection and lose the alert."""
        if self._writer.can_write_eof():
            self._writer.write_eof()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(LINGER_S):
                while await self._reader.read(READ_CHUNK):
                    pass
